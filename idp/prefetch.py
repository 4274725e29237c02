"""Links that act when followed (an SSO answer, a parked sign-in continued, a code issued, a role assumed) are
fetched with HEAD too, by link checkers, mail scanners and prefetchers. Flask runs a GET view for HEAD; these
views answer HEAD with an empty 200 instead, so that only the browser's own visit uses up what is single-use."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

from flask import Response, request
from werkzeug.wrappers import Response as BaseResponse

P = ParamSpec("P")


def inert_on_head(view: Callable[P, BaseResponse]) -> Callable[P, BaseResponse]:
    @functools.wraps(view)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> BaseResponse:
        if request.method == "HEAD":
            return Response(status=200)
        return view(*args, **kwargs)

    return guarded
