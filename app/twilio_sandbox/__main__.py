"""`python -m app.twilio_sandbox --port 8765`: the sandbox as its own server."""

from __future__ import annotations

import argparse

import uvicorn

from app.core.logging import configure_logging
from app.core.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from app.twilio_sandbox.app import create_sandbox_app
from app.twilio_sandbox.config import SandboxConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.twilio_sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--callback-delay", type=float, default=0.2, help="seconds per status")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="a timeout fault's hang")
    parser.add_argument("--account-sid", default=SANDBOX_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=SANDBOX_AUTH_TOKEN)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    config = SandboxConfig(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        callback_delay_seconds=args.callback_delay,
        hang_seconds=args.hang_seconds,
    )
    configure_logging(args.log_level)
    uvicorn.run(
        create_sandbox_app(config), host=args.host, port=args.port, log_level=args.log_level
    )


if __name__ == "__main__":
    main()
