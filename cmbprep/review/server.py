"""The review page's local web server (standard library ``http.server``).

Serves on 127.0.0.1 only, answers only requests addressed to ``127.0.0.1:PORT`` or
``localhost:PORT`` (a page of another site cannot reach it through a DNS name), takes
decisions only as JSON ``POST`` requests, fetches nothing and writes only the units'
``_desc-reviewed_cmb.tsv`` and its sidecar (:mod:`.store`).

Routes: ``GET /`` the page (``page.html``, all script and style inline); ``GET
/api/state?rater=NAME`` the queue with that rater's decisions and where to resume;
``GET /api/crop?item=N&zoom=Z`` the PNG of the item's crops
(:func:`cmbprep.reports.crops.candidate_crops`); ``POST /api/decision`` ``{"rater",
"item", "decision"}`` records a decision (``yes``, ``no``, ``unsure`` or ``null`` to
clear it) and answers once it is on disk.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from ..errors import CmbprepError, InputMissingError
from ..reports.crops import ZOOM_HALF_WIDTHS_MM, UnitImages, candidate_crops, \
    unit_image_paths
from . import store

LOGGER = logging.getLogger("cmbprep.review")
HOST = "127.0.0.1"


class ReviewSession:
    """The queue of one participant and the decisions, independent of HTTP."""

    def __init__(self, output_dir, participant_label, *, session=None, rater=None,
                 min_score=None, cache_size=64):
        self.units = store.find_units(output_dir, participant_label, session)
        store.check_writable(self.units)
        for unit in self.units:
            if not unit_image_paths(unit.folder, unit.prefix):
                raise InputMissingError(f"{unit.folder}: no {unit.prefix}_desc-preproc_swi"
                                        ".nii.gz or _desc-minip_swi.nii.gz to show")
        self.participant = f"sub-{str(participant_label).removeprefix('sub-')}"
        self.queue = store.build_queue(self.units, min_score)
        self.default_rater = store.check_rater(rater) if rater else None
        self.min_score = min_score
        self._images = {}
        self._pngs = OrderedDict()
        self._cache_size = cache_size
        self._draw_lock = threading.Lock()

    def state(self, rater=None) -> dict:
        """The queue with ``rater``'s decisions, and the first undecided position."""
        items = [dict(item) for item in self.queue]
        if rater:
            rater = store.check_rater(rater)
            decisions = {index: store.rater_decisions(unit, rater)
                         for index, unit in enumerate(self.units)}
            for item in items:
                decision, at = decisions[item["unit"]].get(item["candidate_id"],
                                                           (None, None))
                item["decision"], item["decided_at"] = decision, at
        resume = next((i["item"] for i in items if not i.get("decision")), len(items))
        return {"participant": self.participant, "version": __version__,
                "default_rater": self.default_rater, "rater": rater,
                "raters": store.raters(self.units), "items": items, "resume": resume,
                "min_score": self.min_score,
                "zoom_half_widths_mm": list(ZOOM_HALF_WIDTHS_MM),
                "tables": [u.reviewed_tsv.relative_to(u.root).as_posix()
                           for u in self.units]}

    def decide(self, rater, item, decision) -> dict:
        """Record a decision on queue position ``item``; returns the written row."""
        entry = self.queue[int(item)]
        unit = self.units[entry["unit"]]
        mine = [i for i in self.queue if i["unit"] == entry["unit"]]
        return store.record_decision(unit, rater, mine, entry["candidate_id"], decision)

    def crop_png(self, item, zoom=0) -> bytes:
        """PNG of the crops of queue position ``item`` at zoom level ``zoom``."""
        entry = self.queue[int(item)]
        zoom = int(zoom) % len(ZOOM_HALF_WIDTHS_MM)
        key = (int(item), zoom)
        with self._draw_lock:  # matplotlib draws one figure at a time
            if key in self._pngs:
                self._pngs.move_to_end(key)
                return self._pngs[key]
            images = self._images.get(entry["unit"])
            if images is None:
                unit = self.units[entry["unit"]]
                images = UnitImages.load(unit_image_paths(unit.folder, unit.prefix))
                self._images[entry["unit"]] = images
            png = candidate_crops(images, (entry["x"], entry["y"], entry["z"]),
                                  ZOOM_HALF_WIDTHS_MM[zoom])
            self._pngs[key] = png
            while len(self._pngs) > self._cache_size:
                self._pngs.popitem(last=False)
        return png


def page_html() -> bytes:
    """The review page (``page.html``): HTML with its script and style inline."""
    return resources.files("cmbprep.review").joinpath("page.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_version = f"cmbprep-review/{__version__}"
    protocol_version = "HTTP/1.1"

    @property
    def session(self) -> ReviewSession:
        return self.server.review_session

    def log_message(self, format, *args):  # noqa: A002 - http.server API
        LOGGER.debug("%s %s", self.address_string(), format % args)

    def _host_ok(self):
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in (f"{HOST}:{port}", f"localhost:{port}")

    def _send(self, status, body: bytes, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                         "script-src 'unsafe-inline'; connect-src 'self'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, content):
        self._send(status, json.dumps(content, default=str).encode(), "application/json")

    def _error(self, status, message):
        self._json(status, {"error": message})

    def do_GET(self):  # noqa: N802 - http.server API
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "only 127.0.0.1 or localhost")
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/", "/index.html"):
                return self._send(HTTPStatus.OK, page_html(), "text/html; charset=utf-8")
            if url.path == "/api/state":
                return self._json(HTTPStatus.OK, self.session.state(query.get("rater")))
            if url.path == "/api/crop":
                png = self.session.crop_png(int(query["item"]), int(query.get("zoom", 0)))
                return self._send(HTTPStatus.OK, png, "image/png")
            if url.path == "/favicon.ico":
                return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        except (KeyError, ValueError, IndexError) as exc:
            return self._error(HTTPStatus.BAD_REQUEST, f"bad request: {exc}")
        except CmbprepError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        return self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    def do_POST(self):  # noqa: N802 - http.server API
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "only 127.0.0.1 or localhost")
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON")
        length = int(self.headers.get("Content-Length", 0) or 0)
        try:
            body = json.loads(self.rfile.read(min(length, 65536)) or b"{}")
            if urlsplit(self.path).path != "/api/decision":
                return self._error(HTTPStatus.NOT_FOUND, "no such action")
            row = self.session.decide(body["rater"], int(body["item"]),
                                      body.get("decision"))
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            return self._error(HTTPStatus.BAD_REQUEST, f"bad request: {exc}")
        except CmbprepError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except OSError as exc:
            LOGGER.error("could not save the decision: %s", exc)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                               f"could not save the decision: {exc}")
        return self._json(HTTPStatus.OK, {"saved": row})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # handler threads never keep the process alive

    def handle_error(self, request, client_address):
        """A browser that drops a connection (an image load it no longer needs) is
        routine: one debug line, not a traceback on stderr (which, piped and unread,
        could fill up and block the server). Other errors are logged once."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            LOGGER.debug("%s dropped the connection (%s)", client_address[0], exc)
        else:
            LOGGER.error("error while answering %s: %s", client_address[0], exc)


def make_server(session: ReviewSession, port: int = 8765) -> ThreadingHTTPServer:
    """A server of ``session`` bound to 127.0.0.1:``port`` (0: any free port)."""
    server = _Server((HOST, int(port)), _Handler)
    server.review_session = session
    return server
