#!/usr/bin/env python3
"""Loads a node's page (GET /) in headless Chromium (Debian's chromium-headless-shell) and
drives it as a user would, over the DevTools protocol on a pipe (--remote-debugging-pipe:
standard library only, no websocket client):

1. open the page and wait until the picture shows at least --contacts contacts;
2. type --key into the key box and press Enter;
3. wait until the picture draws a highlighted lookup, then keep a screenshot (--screenshot).

Prints one JSON object: what the page drew (contacts, the highlighted lookup's target and
hops), every console error and uncaught exception, every URL the page requested, and the
time from navigation to the first drawing with contacts. tests/page.rs checks it.

Usage: page_check.py URL --key KEY --contacts N --screenshot FILE.png
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

BROWSER = os.environ.get("CHROMIUM", "chromium-headless-shell")


class Browser:
    """A headless Chromium and its DevTools pipe (JSON messages, each ended by a NUL)."""

    def __init__(self):
        self.profile = tempfile.TemporaryDirectory(prefix="kad-page-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def fds():
            # The browser reads commands on fd 3 and writes answers on fd 4. The pipe's own
            # fds may be 3 or 4: copy them out of the way first (dup2 onto itself would keep
            # close-on-exec).
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [BROWSER, "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--user-data-dir=" + self.profile.name,
             "--window-size=1100,900", "about:blank"],
            preexec_fn=fds, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def _read(self, deadline):
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("the browser did not answer")
            chunk = os.read(self.from_browser, 65536)
            if not chunk:
                raise RuntimeError("the browser closed its pipe (exit %s)" % self.proc.poll())
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError("%s failed: %s" % (method, answer["error"]))
                return answer.get("result", {})
            self.events.append(answer)

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.profile.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--key", required=True)
    ap.add_argument("--contacts", type=int, required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()

    b = Browser()
    try:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            b.call(domain + ".enable", session=session)

        def evaluate(expression):
            r = b.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                       session=session)
            if "exceptionDetails" in r:
                raise RuntimeError("%s threw: %s" % (expression, r["exceptionDetails"]))
            return r["result"].get("value")

        def wait_for(expression, what):
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                value = evaluate(expression)
                if value:
                    return value
                time.sleep(0.02)
            raise TimeoutError("the page never showed " + what)

        started = time.monotonic()
        b.call("Page.navigate", {"url": args.url}, session=session)
        wait_for("document.querySelectorAll('#picture svg .contact').length >= %d" % args.contacts,
                 "%d contacts" % args.contacts)
        first_drawing_ms = (time.monotonic() - started) * 1000
        contacts = evaluate("document.querySelectorAll('#picture svg .contact').length")
        live = evaluate("document.querySelectorAll('#picture svg .contact.live').length")
        buckets = evaluate("document.querySelectorAll('#picture svg .bucket').length")

        # Type the key and press Enter, as a user would.
        evaluate("document.getElementById('key').focus()")
        b.call("Input.insertText", {"text": args.key}, session=session)
        for kind in ("keyDown", "keyUp"):
            b.call("Input.dispatchKeyEvent",
                   {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
                    "text": "\r" if kind == "keyDown" else ""}, session=session)
        typed = time.monotonic()
        wait_for("document.querySelector('#picture svg .lookup.highlight') !== null",
                 "a highlighted lookup")
        lookup_ms = (time.monotonic() - typed) * 1000
        lit = evaluate("""(() => {
            const g = document.querySelector('#picture svg .lookup.highlight');
            return { target: g.dataset.target, kind: g.dataset.kind,
                     hops: g.querySelectorAll('.hop').length,
                     rounds: g.querySelectorAll('.round[data-round]').length };
        })()""")
        status = evaluate("document.getElementById('status').textContent")
        # Let the rounds appear one after another, then keep the picture.
        time.sleep(3)
        shot = b.call("Page.captureScreenshot", {"format": "png"}, session=session)
        with open(args.screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

        errors, requests = [], []
        for e in b.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                       for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                requests.append(params["request"]["url"])
        print(json.dumps({
            "contacts": contacts, "live": live, "buckets": buckets,
            "highlight": lit, "status": status, "errors": errors,
            "requests": sorted(set(requests)), "first_drawing_ms": round(first_drawing_ms, 1),
            "lookup_drawn_ms": round(lookup_ms, 1), "screenshot": args.screenshot,
        }))
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
