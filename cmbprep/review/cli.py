"""``cmbprep-review``: the command line of the review page.

Exit codes as ``cmbprep``'s (``docs/usage.rst``): 0 after Ctrl-C, 64 bad arguments, 65
an unreadable candidate table, 66 no participant outputs, 73 the derivatives folder is
not writable, 74 the port cannot be opened.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import webbrowser
from pathlib import Path

from .. import __version__
from ..cli.parser import _Parser
from ..errors import CmbprepError, IOFailure


def _score(value: str) -> float:
    return float(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cmbprep-review`` (also used by the docs)."""
    parser = _Parser(
        prog="cmbprep-review",
        description="Review the microbleed candidates of one participant in a local web "
        "page; every decision is saved at once to <prefix>_desc-reviewed_cmb.tsv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("output_dir", type=Path,
                        help="the cmbprep output folder (participant level done)")
    parser.add_argument("--participant-label", "--participant_label", required=True,
                        metavar="LABEL", help="the participant (with or without 'sub-')")
    parser.add_argument("--session", "--session-label", dest="session", metavar="LABEL",
                        help="review only this session (default: all of the participant)")
    parser.add_argument("--rater", metavar="NAME",
                        help="your name or initials (default: asked once by the page)")
    parser.add_argument("--min-score", type=_score, metavar="SCORE",
                        help="after the accepted and 'review' candidates, also show the "
                        "rejected ones with a score of at least SCORE")
    parser.add_argument("--port", type=int, default=8765,
                        help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--no-browser", action="store_true",
                        help="do not open a web browser (open the printed address)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every request")
    parser.add_argument("--version", action="version",
                        version=f"cmbprep-review v{__version__}")
    return parser


def main(argv=None) -> int:
    """Serve the review page until Ctrl-C; return the exit code."""
    from .server import ReviewSession, make_server

    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                            format="cmbprep-review: %(message)s")
        if not args.output_dir.is_dir():
            from ..errors import InputMissingError
            raise InputMissingError(f"{args.output_dir}: no such output folder")
        session = ReviewSession(args.output_dir.absolute(), args.participant_label,
                                session=args.session, rater=args.rater,
                                min_score=args.min_score)
        try:
            server = make_server(session, args.port)
        except OSError as exc:
            raise IOFailure(f"cannot serve on 127.0.0.1:{args.port} ({exc.strerror or exc})"
                            "; choose another --port") from exc
    except CmbprepError as exc:
        print(f"cmbprep-review: error: {exc}", file=sys.stderr)
        return exc.exit_code
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"cmbprep-review: {session.participant}: {len(session.queue)} candidate(s) to "
          f"review; serving {url} (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    # Ctrl-C and SIGTERM stop the server even when the parent started it with SIGINT
    # ignored (an inherited SIG_IGN, e.g. from a background job or a test runner).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
