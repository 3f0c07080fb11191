#!/usr/bin/env python3
"""stamp_progress.py FIFO OUT: reads an extraction's progress bar (its stderr with progress
'on', sent through the named pipe FIFO) and writes OUT, one line per redraw: the Unix time
of its arrival, a tab, the line; a last line "<time>\tEOF" when the writer exits.
The pipe is opened here, after start-up, so the writer (whose open blocks until then)
cannot run ahead of the clock. The bench takes the finalize phase (results, top-example
windows, index) as the time from the first redraw that says "finalizing" to EOF.
Standard library only."""
import os
import sys
import time


def main():
    fd = os.open(sys.argv[1], os.O_RDONLY)
    buf = b""
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        while True:
            chunk = os.read(fd, 65536)
            t = time.time()
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.replace(b"\n", b"\r").split(b"\r")
            for line in lines:
                text = line.decode("utf-8", "replace").replace("\033[K", "").strip()
                if text:
                    out.write("%.3f\t%s\n" % (t, text))
            out.flush()
        if buf.strip():
            out.write("%.3f\t%s\n" % (t, buf.decode("utf-8", "replace").strip()))
        out.write("%.3f\tEOF\n" % t)


if __name__ == "__main__":
    main()
