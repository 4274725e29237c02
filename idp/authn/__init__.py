"""Authentication: who is this? The built-in directory, the Principal, sign-in, sessions and throttling."""
