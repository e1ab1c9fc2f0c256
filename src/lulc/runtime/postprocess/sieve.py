"""Minimum mapping unit: GDAL's sieve filter, streamed strip by strip, same pixels.

``rasterio.features.sieve`` (GDAL's ``GDALSieveFilter``) needs the whole band in memory.
This is the same algorithm, made of passes over strips of rows that each keep only the
previous row and one record per region (as GDAL's own line-by-line enumerator does), so a
map of any size is sieved with memory bounded by its number of regions, not its pixels:

1. **Regions.** Pixels are labelled row by row: a pixel takes the provisional label of the
   first same-class neighbour already seen (left, upper-left, up, upper-right with
   8-connectivity), and labels that meet are joined in a union–find, so a region that winds
   across strips (or Dask parts) is one region. Sizes add up per region. Nodata pixels are
   no region and never a neighbour.
2. **Biggest neighbours.** The rows are labelled again (the provisional labels come out the
   same) and every pair of touching pixels of different regions is compared in GDAL's order
   (up, upper-left, upper-right, left, pixel by pixel in raster order): each region keeps the
   largest neighbour met, the first one met among equally large ones.
3. **Merges.** A region smaller than the threshold follows its biggest neighbour, and that
   one's, until a region at least as large as the threshold (it then takes that region's
   class) or a dead end or cycle (it stays as it is).
4. **Writing.** The rows are labelled once more and each pixel of a merged region gets its
   new class.

The result equals ``rasterio.features.sieve(band, size, mask=band != nodata,
connectivity=8)`` on the whole band, pixel for pixel (tested, also across Dask parts).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numba import njit

#: labels, sizes and links are 32-bit: a map has fewer than 2**31 regions (each at least a pixel)
LABEL = np.int32


@njit(nogil=True, cache=True)
def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit(nogil=True, cache=True)
def _union(parent: np.ndarray, a: int, b: int) -> None:
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@njit(nogil=True, cache=True)
def label_rows(rows: np.ndarray, nodata: int, eight: bool, prev_vals: np.ndarray, prev_ids: np.ndarray,
               has_prev: bool, next_id: int, ids: np.ndarray, parent: np.ndarray, sizes: np.ndarray,
               values: np.ndarray, record: bool) -> int:
    """Label ``rows`` (h, W) after the row ``prev_vals``/``prev_ids`` (when ``has_prev``);
    ``ids`` (h, W) receives provisional labels (-1: nodata). With ``record`` the labels are
    joined in ``parent`` and counted in ``sizes`` (first pass); the labels come out the same
    either way. Returns the next free label."""
    h, w = rows.shape
    for y in range(h):
        for x in range(w):
            v = rows[y, x]
            if v == nodata:
                ids[y, x] = -1
                continue
            label = -1
            # the neighbours already labelled, in a fixed order: left, upper-left, up, upper-right
            for k in range(4):
                if k == 0:
                    if x == 0:
                        continue
                    nv, nid = rows[y, x - 1], ids[y, x - 1]
                else:
                    dx = k - 2  # -1, 0, +1
                    if (k != 2 and not eight) or x + dx < 0 or x + dx >= w:
                        continue
                    if y > 0:
                        nv, nid = rows[y - 1, x + dx], ids[y - 1, x + dx]
                    elif has_prev:
                        nv, nid = prev_vals[x + dx], prev_ids[x + dx]
                    else:
                        continue
                if nid < 0 or nv != v:
                    continue
                if label < 0:
                    label = nid
                elif record:
                    _union(parent, label, nid)
            if label < 0:
                label = next_id
                next_id += 1
                if record:
                    parent[label] = label
                    values[label] = v
            ids[y, x] = label
            if record:
                sizes[label] += 1
    return next_id


@njit(nogil=True, cache=True)
def _compare(p: int, q: int, region: np.ndarray, sizes: np.ndarray, big: np.ndarray) -> None:
    """GDAL's CompareNeighbour on final regions."""
    if p < 0 or q < 0:
        return
    a = region[p]
    b = region[q]
    if a == b:
        return
    if big[a] == -1 or sizes[big[a]] < sizes[b]:
        big[a] = b
    if big[b] == -1 or sizes[big[b]] < sizes[a]:
        big[b] = a


@njit(nogil=True, cache=True)
def compare_rows(ids: np.ndarray, prev_ids: np.ndarray, has_prev: bool, eight: bool, region: np.ndarray,
                 sizes: np.ndarray, big: np.ndarray) -> None:
    """Every touching pair of pixels of ``ids`` (and of its first row with ``prev_ids``), in
    GDAL's order: up, upper-left, upper-right, left."""
    h, w = ids.shape
    for y in range(h):
        for x in range(w):
            this = ids[y, x]
            if y > 0 or has_prev:
                above = ids[y - 1] if y > 0 else prev_ids
                _compare(this, above[x], region, sizes, big)
                if eight and x > 0:
                    _compare(this, above[x - 1], region, sizes, big)
                if eight and x < w - 1:
                    _compare(this, above[x + 1], region, sizes, big)
            if x > 0:
                _compare(this, ids[y, x - 1], region, sizes, big)


@njit(nogil=True, cache=True)
def resolve_merges(roots: np.ndarray, sizes: np.ndarray, big: np.ndarray, threshold: int) -> None:
    """Regions below ``threshold`` walk their biggest neighbours to one at least that large
    (``big`` then points at it) or give up (``big`` -1), as GDALSieveFilter does."""
    seen = np.full(big.shape[0], -1, big.dtype)  # the region whose walk last visited each
    for r in roots:
        if sizes[r] >= threshold:
            big[r] = -1
            continue
        if big[r] == -1:
            continue
        seen[r] = r
        final = r
        found = False
        while True:
            final = big[final]
            if final < 0:
                break
            if sizes[final] >= threshold:
                found = True
                break
            if seen[final] == r:
                break
            seen[final] = r
        if not found:
            big[r] = -1
            continue
        cur = r
        while big[cur] != final:
            nxt = big[cur]
            big[cur] = final
            cur = nxt


@njit(nogil=True, cache=True)
def apply_rows(rows: np.ndarray, ids: np.ndarray, region: np.ndarray, big: np.ndarray, values: np.ndarray,
               out: np.ndarray) -> None:
    """``out``: ``rows`` with each pixel of a merged region given its target region's class."""
    h, w = rows.shape
    for y in range(h):
        for x in range(w):
            i = ids[y, x]
            out[y, x] = rows[y, x]
            if i >= 0:
                target = big[region[i]]
                if target >= 0:
                    out[y, x] = values[target]


Strips = Callable[[], Iterator[tuple[int, np.ndarray]]]


class _Labels:
    """The growing per-label arrays of the first pass (``used`` labels so far): 9 bytes a
    label (int32 parent and size, uint8 class), as GDAL's enumerator keeps ~24 a polygon."""

    def __init__(self, width: int):
        self.parent = np.zeros(max(1024, width), LABEL)
        self.sizes = np.zeros_like(self.parent)
        self.values = np.zeros(len(self.parent), np.uint8)
        self.used = 0

    def room(self, needed: int) -> None:
        if needed >= np.iinfo(LABEL).max:
            raise MemoryError("more regions than a 32-bit label can count")
        if needed > len(self.parent):
            cap = max(needed, 2 * len(self.parent))
            for name in ("parent", "sizes", "values"):
                old = getattr(self, name)
                grown = np.zeros(cap, old.dtype)
                grown[: len(old)] = old
                setattr(self, name, grown)

    def trimmed(self) -> None:
        for name in ("parent", "sizes", "values"):
            setattr(self, name, getattr(self, name)[: self.used].copy())


def _passes(strips: Strips, width: int, nodata: int, eight: bool, labels: _Labels | None) -> Iterator[
        tuple[int, np.ndarray, np.ndarray, np.ndarray, bool]]:
    """Label the strips in order; yields (row, strip, ids, previous row's ids, whether there
    is one). With ``labels`` (the first pass) the labels are joined and counted there."""
    prev_vals = np.zeros(width, np.uint8)
    prev_ids = np.full(width, -1, LABEL)
    has_prev, next_id = False, 0
    scratch, scratch_values = np.zeros(1, LABEL), np.zeros(1, np.uint8)
    for row, rows in strips():
        ids = np.empty(rows.shape, LABEL)
        if labels is not None:
            labels.room(next_id + rows.size)
        arrays = (labels.parent, labels.sizes, labels.values) if labels is not None else (scratch, scratch, scratch_values)
        next_id = label_rows(rows, nodata, eight, prev_vals, prev_ids, has_prev, next_id, ids, *arrays,
                             labels is not None)
        if labels is not None:
            labels.used = next_id
        yield row, rows, ids, prev_ids, has_prev
        prev_vals, prev_ids, has_prev = rows[-1].copy(), ids[-1].copy(), True


def sieve(strips: Strips, width: int, threshold: int, write: Callable[[int, np.ndarray], None], nodata: int = 255,
          connectivity: int = 8) -> int:
    """Sieve the band whose strips ``strips()`` yields as (first row, rows of uint8) — it is
    called three times and must yield the same strips each time — and ``write(first row,
    rows)`` the result in order; returns the number of regions merged away."""
    eight = connectivity == 8
    labels = _Labels(width)
    for _ in _passes(strips, width, nodata, eight, labels):
        pass
    labels.trimmed()
    region = roots_of(labels.parent, labels.sizes)
    big = np.full(len(region), -1, LABEL)
    for _, _, ids, prev_ids, has_prev in _passes(strips, width, nodata, eight, None):
        compare_rows(ids, prev_ids, has_prev, eight, region, labels.sizes, big)
    roots = np.flatnonzero(region == np.arange(len(region)))
    resolve_merges(roots, labels.sizes, big, threshold)
    merged = int((big[roots] >= 0).sum())
    for row, rows, ids, _, _ in _passes(strips, width, nodata, eight, None):
        out = np.empty_like(rows)
        apply_rows(rows, ids, region, big, labels.values, out)
        write(row, out)
    return merged


@njit(nogil=True, cache=True)
def roots_of(parent: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each label's region (its root); every label's size is added into its root's."""
    n = parent.shape[0]
    region = np.empty(n, parent.dtype)
    for i in range(n):
        region[i] = _find(parent, i)
    for i in range(n):
        r = region[i]
        if r != i:
            sizes[r] += sizes[i]
            sizes[i] = 0
    return region
