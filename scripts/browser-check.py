#!/usr/bin/env python3
"""Loads a page in headless Chromium and reports what the browser saw, as JSON on stdout.

    scripts/browser-check.py PAGE.html [--screenshot OUT.png] [--width 1280] [--height 800]

It drives Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: standard
library only, no websocket, no npm) and reports:

  - console messages, uncaught exceptions and log entries at warning level or above;
  - every network request other than the page itself (a self-contained page makes none);
  - per `figure.chart`: its id, the rendered title text, the number of `.point` elements and how
    many of them have a non-empty box on screen, the `data-points` the page declares, whether
    its markup holds NaN or an empty path, and the chart's rendered size;
  - the screenshot of the viewport (PNG, width x height): its size, the fraction of pixels that
    are not the background and the number of distinct colours.

Exit status: 0 when the page loaded, 1 when the browser could not load it (the JSON still says
why). Judging the observations is the caller's job (Tests/ReportTests.swift).
"""
import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Chromium with the DevTools protocol on fds 3 (its input) and 4 (its output)."""

    def __init__(self, binary, width, height):
        self.profile = tempfile.mkdtemp(prefix="iobench-chromium-")
        to_child_r, self.to_child_w = os.pipe()
        self.from_child_r, from_child_w = os.pipe()
        # Above 10, so dup2 onto 3 and 4 in the child never meets itself.
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def wire():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "about:blank"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, preexec_fn=wire, close_fds=False)
        os.close(high_r)
        os.close(high_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_child_w, json.dumps(message).encode() + b"\0")
        return self.next_id

    def read_message(self, deadline):
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the browser did not answer in time")
            ready, _, _ = select.select([self.from_child_r], [], [], left)
            if ready:
                chunk = os.read(self.from_child_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("the browser closed its DevTools pipe")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, params=None, session=None, timeout=30):
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self.read_message(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event, timeout=30):
        deadline = time.monotonic() + timeout
        for i, message in enumerate(self.events):
            if message.get("method") == event:
                del self.events[i]
                return message
        while True:
            message = self.read_message(deadline)
            if message.get("method") == event:
                return message
            self.events.append(message)

    def drain(self, seconds):
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self.read_message(deadline))
        except TimeoutError:
            pass

    def close(self):
        try:
            self.send("Browser.close")
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def png_pixels(data):
    """Width, height and RGB(A) rows of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = depth = colour = interlace = None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG (depth {depth}, colour type {colour})"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, channels, rows


def screenshot_figures(data):
    width, height, channels, rows = png_pixels(data)
    background = rows[0][0:3]
    counts = {}
    for row in rows:
        for x in range(0, width * channels, channels):
            pixel = row[x:x + 3]
            counts[pixel] = counts.get(pixel, 0) + 1
    other = width * height - counts.get(background, 0)
    return {"width": width, "height": height, "background": "#%02x%02x%02x" % tuple(background),
            "non_background_fraction": other / float(width * height), "distinct_colours": len(counts),
            # Colours (not greys) that fill at least 30 pixels: lines, markers, bars, not antialiasing.
            "solid_colours": sorted("#%02x%02x%02x" % tuple(c) for c, k in counts.items()
                                if k >= 30 and len(set(c)) > 1)}


CHART_PROBE = r"""
JSON.stringify({
  title: document.title,
  text_length: document.body ? document.body.innerText.length : 0,
  charts: Array.from(document.querySelectorAll('figure.chart')).map(f => {
    const box = f.getBoundingClientRect();
    const points = Array.from(f.querySelectorAll('.point'));
    const visible = points.filter(p => { const r = p.getBoundingClientRect(); return r.width > 0 && r.height > 0; });
    const title = f.querySelector('.chart-title');
    const titleBox = title ? title.getBoundingClientRect() : null;
    return {
      id: f.dataset.chart,
      declared_points: Number(f.dataset.points),
      title: title ? title.textContent : null,
      title_visible: !!titleBox && titleBox.width > 0 && titleBox.height > 0,
      axis_titles: Array.from(f.querySelectorAll('.axis-title')).map(t => t.textContent),
      legend: Array.from(f.querySelectorAll('.legend-entry')).map(e => e.textContent),
      series: Array.from(f.querySelectorAll('g.series')).map(g => ({name: g.dataset.series, color: g.dataset.color, points: g.querySelectorAll('.point').length})),
      points: points.length,
      visible_points: visible.length,
      nan: f.innerHTML.includes('NaN'),
      empty_paths: Array.from(f.querySelectorAll('path')).filter(p => !(p.getAttribute('d') || '').trim()).length,
      width: box.width,
      height: box.height,
    };
  }),
})
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("page")
    parser.add_argument("--screenshot")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--timeout", type=float, default=60)
    options = parser.parse_args()

    binary = find_chromium()
    if not binary:
        print(json.dumps({"loaded": False, "error": "no chromium found: `make deps` installs Debian's chromium"}))
        return 1
    url = "file://" + os.path.abspath(options.page)
    report = {"loaded": False, "url": url, "browser": binary, "console": [], "exceptions": [], "log": [], "requests": []}
    browser = Browser(binary, options.width, options.height)
    try:
        report["version"] = browser.call("Browser.getVersion").get("product")
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(domain + ".enable", session=session)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": options.width, "height": options.height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        navigation = browser.call("Page.navigate", {"url": url}, session=session)
        if navigation.get("errorText"):
            raise RuntimeError(f"navigation failed: {navigation['errorText']}")
        browser.wait_for("Page.loadEventFired", timeout=options.timeout)
        browser.drain(0.5)  # late console messages and requests
        probe = browser.call("Runtime.evaluate", {"expression": CHART_PROBE, "returnByValue": True}, session=session)
        report.update(json.loads(probe["result"]["value"]))
        shot = browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}, session=session)
        png = base64.b64decode(shot["data"])
        if options.screenshot:
            with open(options.screenshot, "wb") as f:
                f.write(png)
        report["screenshot"] = screenshot_figures(png)
        report["loaded"] = True
    except Exception as error:  # noqa: BLE001 - the report says what failed
        report["error"] = f"{type(error).__name__}: {error}"
    finally:
        for event in browser.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                report["console"].append({"type": params.get("type"), "text": text})
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                report["exceptions"].append(details.get("exception", {}).get("description") or details.get("text"))
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                if entry.get("level") in ("warning", "error"):
                    report["log"].append({"level": entry.get("level"), "text": entry.get("text"), "url": entry.get("url")})
            elif method == "Network.requestWillBeSent":
                request_url = params.get("request", {}).get("url", "")
                if request_url != url:
                    report["requests"].append(request_url)
        browser.close()
    print(json.dumps(report))
    return 0 if report["loaded"] else 1


if __name__ == "__main__":
    sys.exit(main())
