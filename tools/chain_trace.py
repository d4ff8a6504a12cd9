#!/usr/bin/env python3
"""Where matvec_chain's time goes: reads the stamps Q3_OPENCL_CHAIN_TRACE=FILE writes
(runtime/backend_opencl.c, chain_trace_write; layout in kernels/qwen3_shared.h) and prints,
for each product of a launch (0: o_proj, 1: gate/up, 2: down, 3: the next layer's q/k/v or
lm_head), medians over the traced launches in microseconds:

  wall     from the last work-group done with the product before (for product 0: the
           first work-group's start) to the last one done with this product
  barrier  from the last arrival to the first work-group past the barrier
  release  from the first work-group past the barrier to the last
  stage    a work-group's x staged (median over work-groups)
  items    a work-group's items, staged to done: median and slowest
  tail     from the median work-group done to the last

and the gap between launches (decode attention and two launch boundaries). Then decode
attention's own stamps (attention_tc, traced with it): per launch, a work-group's start to q and
k prepared (prep), to its positions done (rounds), to its end (finish: its partials stored and
counted in; for the last of a column, with the splits' combine), the spread of the starts,
and the gap split into the launch boundary before attention, attention, and the one after.
--by-group
also prints, per product, when work-groups 0-23, 24-47, ... were done (medians from the
first work-group past the barrier): which of them took an item more.

usage: tools/chain_trace.py [--by-group] FILE   (NVIDIA's %globaltimer: ns, low 32 bits)
"""
import statistics
import struct
import sys


def rel(t, ref):
    """t - ref in ns, the stamps being the timer's low 32 bits"""
    d = (t - ref) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


def main():
    args = sys.argv[1:]
    by_group = args[:1] == ["--by-group"]
    if by_group:
        args = args[1:]
    if len(args) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    path = args[0]
    data = open(path, "rb").read()
    G, PH, LAUNCHES, STAMPS = struct.unpack_from("4I", data, 0)
    sync = struct.unpack_from("4I", data, 16)
    count = sync[3]
    n = LAUNCHES * PH * G * STAMPS
    st = struct.unpack_from("%dI" % n, data, 32)
    if G == 0 or count < 2:
        sys.exit("%s: no chained launches traced" % path)
    first = max(0, count - LAUNCHES)
    launches = []
    ref = st[(first % LAUNCHES) * PH * G * STAMPS]  # one origin, so that launches can be compared
    for i in range(first, count):
        base = (i % LAUNCHES) * PH * G * STAMPS
        prods = []
        for p in range(PH):
            rows = [st[base + (p * G + g) * STAMPS: base + (p * G + g + 1) * STAMPS] for g in range(G)]
            if not any(r[3] for r in rows):
                break
            rows = [[rel(t, ref) for t in r] for r in rows]
            # a product not in this launch (or never stamped) is left out
            if any(r[3] < r[0] or r[3] - r[0] > 10_000_000 for r in rows):
                break
            prods.append(rows)
        launches.append(prods)
    launches = [l for l in launches if l]
    if not launches:
        sys.exit("%s: no stamps (they are NVIDIA's %%globaltimer)" % path)
    nph = statistics.mode(len(l) for l in launches)
    launches = [l for l in launches if len(l) == nph]
    stats = {}

    def add(key, v):
        stats.setdefault(key, []).append(v / 1000.0)

    prev_end = None
    for l in launches:
        start = min(r[0] for r in l[0])
        if prev_end is not None:
            add(("gap", -1), start - prev_end)
        last_done = start
        for p, rows in enumerate(l):
            # stamps 1 and 2 come from the work-groups that run an item of the product
            busy = [r for r in rows if r[0] <= r[1] <= r[2] <= r[3]]
            done = sorted(r[3] for r in rows)
            add(("wall", p), done[-1] - last_done)
            if busy:
                waited = sorted(r[1] for r in busy)
                if p > 0:
                    add(("barrier", p), waited[0] - max(r[0] for r in rows))
                add(("release", p), waited[-1] - waited[0])
                add(("stage", p), statistics.median(r[2] - r[1] for r in busy))
                items = sorted(r[3] - r[2] for r in busy)
                add(("items", p), items[len(items) // 2])
                add(("items max", p), items[-1])
            add(("tail", p), done[-1] - done[len(done) // 2])
            last_done = done[-1]
        add(("launch", -1), last_done - start)
        prev_end = last_done
    print("%d launches of %d products traced (%d work-groups), medians in us" % (len(launches), nph, G))
    keys = ["wall", "barrier", "release", "stage", "items", "items max", "tail"]
    print("%-10s" % "product" + "".join("%10s" % k for k in keys))
    for p in range(nph):
        cells = []
        for k in keys:
            v = stats.get((k, p))
            cells.append("%10.2f" % statistics.median(v) if v else "%10s" % "-")
        print("%-10d" % p + "".join(cells))
    for k in ("launch", "gap"):
        v = stats.get((k, -1))
        if v:
            print("%-10s %.2f (min %.2f, max %.2f)" % (k, statistics.median(v), min(v), max(v)))
    attention(data, 32 + 4 * n, ref, launches)
    if by_group:
        print("done, by work-groups of 24 (us from the first past the barrier)")
        for p in range(nph):
            done = {}
            for l in launches:
                rows = l[p]
                waited = [r[1] for r in rows if r[0] <= r[1] <= r[3]]
                if not waited:
                    continue
                for g, r in enumerate(rows):
                    done.setdefault(g // 24, []).append((r[3] - min(waited)) / 1000.0)
            print("%-10d" % p + " ".join("%6.1f" % statistics.median(done[b]) for b in sorted(done)))


def attention(data, off, ref, chains):
    """attention_tc's section of the trace (after matvec_chain's), on the chains' clock"""
    if len(data) < off + 20:
        return
    ncol, splits, launches_max, stamps = struct.unpack_from("4I", data, off)
    started = struct.unpack_from("I", data, off + 16)[0]
    n = launches_max * ncol * splits * stamps
    if len(data) < off + 20 + 4 * n or started == 0:
        print("attention: not traced (attention_tc did not run)")
        return
    st = struct.unpack_from("%dI" % n, data, off + 20)

    def slot(i):  # the work-groups of launch slot i that wrote stamps: [(sp, c, stamps)]
        base = i * ncol * splits * stamps
        out = []
        for sp in range(splits):
            for c in range(ncol):
                r = st[base + (sp * ncol + c) * stamps: base + (sp * ncol + c + 1) * stamps]
                if r[3]:
                    out.append((sp, c, [rel(t, ref) for t in r]))
        return out

    sizes = [len(slot(i)) for i in range(launches_max)]
    nwg = statistics.mode([k for k in sizes if k] or [1])  # a launch's work-groups: columns x splits
    total = started // nwg
    att = []
    for i in range(max(0, total - launches_max), total):
        wgs = slot(i % launches_max)
        if len(wgs) != nwg:
            continue
        att.append(wgs)
    if not att:
        print("attention: no complete launch traced")
        return
    stats = {}

    def add(key, v):
        stats.setdefault(key, []).append(v / 1000.0)

    spans = []
    for wgs in att:
        t0 = [r[0] for _, _, r in wgs]
        t3 = [r[3] for _, _, r in wgs]
        spans.append((min(t0), max(t3)))
        add("start spread", max(t0) - min(t0))
        add("span", max(t3) - min(t0))
        add("prep", statistics.median(r[1] - r[0] for _, _, r in wgs))
        add("rounds", statistics.median(r[2] - r[1] for _, _, r in wgs))
        lastc = {}
        for sp, c, r in wgs:
            if c not in lastc or r[3] > lastc[c][3]:
                lastc[c] = r
        others = [r[3] - r[2] for _, c, r in wgs if r is not lastc[c]]
        if others:
            add("finish", statistics.median(others))
        add("finish, last of a column", statistics.median(r[3] - r[2] for r in lastc.values()))
    print("attention: %d launches of %d work-groups (%d columns), medians in us" % (len(att), nwg, ncol))
    for k in ("span", "start spread", "prep", "rounds", "finish", "finish, last of a column"):
        if k in stats:
            print("  %-26s %.2f" % (k, statistics.median(stats[k])))
    # the gap between two chained launches: boundary, attention, boundary
    ends = [(min(r[0] for r in l[0]), max(r[3] for r in l[-1])) for l in chains]
    parts = {}
    for (s0, e0), (s1, e1) in zip(ends, ends[1:]):
        inside = [a for a in spans if a[0] >= e0 and a[1] <= s1]
        if len(inside) == 1 and s1 - e0 < 200_000:
            a = inside[0]
            for k, v in (("chain -> attention", a[0] - e0), ("attention", a[1] - a[0]), ("attention -> chain", s1 - a[1])):
                parts.setdefault(k, []).append(v / 1000.0)
    for k in ("chain -> attention", "attention", "attention -> chain"):
        if k in parts:
            print("  gap: %-20s %.2f" % (k, statistics.median(parts[k])))


if __name__ == "__main__":
    main()
