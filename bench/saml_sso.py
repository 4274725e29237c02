"""Benchmark: SAML SSO for a user who already has an SSO session, on the bridge and on SimpleSAMLphp.

Each flow is a fresh AuthnRequest (HTTP-Redirect) answered with a signed assertion in a signed response (two
RSA-2048 signatures), for a user who signed in once before the measurement. Prints, for each server, throughput,
latency percentiles, the server's CPU seconds and responses per server CPU-second; then the bridge against
SimpleSAMLphp and against the raw RSA signing rate of the same key. A third server is measured: the floor of
this stack for that answer (bench/peers/saml_floor_app.py, a minimal Flask SSO endpoint under the same
gunicorn), with the floor against SimpleSAMLphp and the bridge against the floor.

    .venv/bin/python bench/saml_sso.py [--seconds 10] [--clients 4] [--workers 2] [--rounds 1] [--short]
        [--database-url URL] [--redis-url URL]
"""

from __future__ import annotations

import harness
from bridge import workspace
from harness import Report, options, parser
from peers.floor import saml_floor
from peers.simplesamlphp import SimpleSamlPhp, UserPass
from saml import ACS_URL, SP_ENTITY_ID, SP_METADATA, SsoWithSession

USER, PASSWORD = "bench", "bench-password"


def main() -> None:
    opts = options(parser(__doc__).parse_args())
    report = Report()
    with workspace(opts) as ws:
        key, bridge = ws.key, ws.bridge
        bridge.add_user(USER, PASSWORD)
        bridge.add_sp(SP_ENTITY_ID, SP_METADATA)
        bridge.start()
        ssp = SimpleSamlPhp(ws.tmp / "ssp", key, SP_ENTITY_ID, ACS_URL, UserPass(USER, PASSWORD), opts.clients)
        ws.stack.callback(ssp.stop)
        ssp.start()
        floor = saml_floor(ws.tmp / "floor", key, SP_ENTITY_ID, ACS_URL, USER, PASSWORD, opts)
        ws.stack.callback(floor.stop)
        floor.start()

        report.title("SAML SSO with an existing session", opts)
        ours, theirs = report.pair((bridge, SsoWithSession(f"{bridge.base}/saml/sso", USER, PASSWORD)),
                                   (ssp, SsoWithSession(ssp.sso_url, USER, PASSWORD)), opts, "responses")
        report.ratio("bridge / SimpleSAMLphp, responses per server CPU-second", ours.per_cpu / theirs.per_cpu,
                     "bridge >= 400 per CPU-s where SimpleSAMLphp does ~280")
        # What the stack itself allows: the essential work of this answer, and nothing else, in Flask.
        least = report.measure(floor, SsoWithSession(f"{floor.base}/sso", USER, PASSWORD), opts, "responses")
        report.ratio("floor / SimpleSAMLphp, per server CPU-second", least.per_cpu / theirs.per_cpu)
        report.ratio("bridge / floor, per server CPU-second", ours.per_cpu / least.per_cpu)
        report.rsa_reference(key, ours.per_cpu, signatures=2, seconds=0.3 if opts.short else 1.5)
    report.exit()


if __name__ == "__main__":
    harness.main(main)
