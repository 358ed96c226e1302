using System.Runtime.CompilerServices;
using Motr.Be.Segments;

namespace Motr.Be.Tx;

/// <summary>
/// The blocks whose checksum is pending in the open group (deferred by a closed transaction and not cancelled since),
/// found by the 4 KiB pages they touch, so that <see cref="Transaction.DeferChecksum"/> can refuse a block overlapping
/// one of them without a scan of the group (which may hold thousands of marks). Kept by the owner thread only; emptied
/// at every seal by the group's sequence (an entry of an older group is stale), so a seal costs nothing here.
/// </summary>
/// <remarks>
/// Each block is one <see cref="PendingBlock"/>, linked from every page it touches (from its start page always, so a
/// place is found from its offset); a later mark for the same place updates it (length, or 0 once cancelled), linking
/// the pages a longer block adds. A look-up walks the links of the pages the new block touches: a few entries per page
/// (at most a page's worth of blocks), however large the group. Grows by doubling, like the group's other arrays.
/// </remarks>
internal sealed unsafe partial class TxManager
{
    private const int PageShift = 12;

    private struct PageSlot
    {
        public long Group;
        public long Page;
        public int Head;
    }

    private struct PendingBlock
    {
        public long Block;
        /// <summary>0 once cancelled.</summary>
        public int Length;
        /// <summary>Pages up to this one (inclusive) link the block.</summary>
        public long LinkedTo;
    }

    private struct PageLink
    {
        public int Block;
        public int Next;
    }

    private PageSlot[] _pageSlots = new PageSlot[64];
    private int _pageSlotsUsed;
    private PendingBlock[] _pendingBlocks = new PendingBlock[16];
    private int _pendingCount;
    private PageLink[] _pageLinks = new PageLink[16];
    private int _pageLinkCount;

    /// <summary>The group of a fresh seal: forget every pending block (their slots are stale by group sequence).</summary>
    private void ClearPending()
    {
        _pageSlotsUsed = 0;
        _pendingCount = 0;
        _pageLinkCount = 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int PageSlotOf(long page)
    {
        int mask = _pageSlots.Length - 1;
        int i = (int)(((ulong)page * 0x9E3779B97F4A7C15UL) >> 32) & mask;
        while (true)
        {
            ref PageSlot s = ref _pageSlots[i];
            if (s.Group != _groupSeq || s.Page == page) return i;
            i = (i + 1) & mask;
        }
    }

    /// <summary>The chain head of <paramref name="page"/>'s links in the open group, -1 for none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int PageHead(long page)
    {
        ref PageSlot s = ref _pageSlots[PageSlotOf(page)];
        return s.Group == _groupSeq ? s.Head : -1;
    }

    private void Link(long page, int block)
    {
        if (2 * (_pageSlotsUsed + 1) > _pageSlots.Length) GrowPageSlots();
        ref PageSlot s = ref _pageSlots[PageSlotOf(page)];
        if (s.Group != _groupSeq)
        {
            s = new PageSlot { Group = _groupSeq, Page = page, Head = -1 };
            _pageSlotsUsed++;
        }
        if (_pageLinkCount == _pageLinks.Length) Array.Resize(ref _pageLinks, _pageLinks.Length * 2);
        _pageLinks[_pageLinkCount] = new PageLink { Block = block, Next = s.Head };
        s.Head = _pageLinkCount++;
    }

    private void GrowPageSlots()
    {
        var old = _pageSlots;
        _pageSlots = new PageSlot[old.Length * 2];
        foreach (ref readonly var s in old.AsSpan())
            if (s.Group == _groupSeq) _pageSlots[PageSlotOf(s.Page)] = s;
    }

    /// <summary>The pending entry for the place <paramref name="block"/>, -1 for none.</summary>
    private int FindPending(long block)
    {
        for (int l = PageHead(block >> PageShift); l >= 0; l = _pageLinks[l].Next)
        {
            int b = _pageLinks[l].Block;
            if (_pendingBlocks[b].Block == block) return b;
        }
        return -1;
    }

    /// <summary>A mark joins the open group (<see cref="AppendToGroup"/>): the latest mark for its place wins.</summary>
    private void NotePending(in Transaction.ChecksumMark t)
    {
        if (t.Block < SegmentHeader.UserStart) return; // the engine's header blocks: fixed, never overlapping
        int b = FindPending(t.Block);
        if (t.Kind == Transaction.MarkKind.Cancel)
        {
            if (b >= 0) _pendingBlocks[b].Length = 0;
            return;
        }
        long first = t.Block >> PageShift, last = (t.Block + t.Length - 1) >> PageShift;
        if (b < 0)
        {
            if (_pendingCount == _pendingBlocks.Length) Array.Resize(ref _pendingBlocks, _pendingBlocks.Length * 2);
            b = _pendingCount++;
            _pendingBlocks[b] = new PendingBlock { Block = t.Block, Length = t.Length, LinkedTo = first - 1 };
        }
        else _pendingBlocks[b].Length = t.Length;
        for (long p = Math.Max(first, _pendingBlocks[b].LinkedTo + 1); p <= last; p++) Link(p, b);
        if (last > _pendingBlocks[b].LinkedTo) _pendingBlocks[b].LinkedTo = last;
    }

    /// <summary>
    /// Whether [<paramref name="block"/>, +<paramref name="length"/>) overlaps a block at another place whose checksum is
    /// pending in the open group, and which <paramref name="tx"/> has not marked itself (its own mark decides for it);
    /// the first such block found.
    /// </summary>
    internal bool PendingOverlap(Transaction tx, long block, int length, out long other, out int otherLength)
    {
        other = 0;
        otherLength = 0;
        if (_pendingCount == 0) return false;
        long end = block + length;
        for (long p = block >> PageShift, last = (end - 1) >> PageShift; p <= last; p++)
        {
            for (int l = PageHead(p); l >= 0; l = _pageLinks[l].Next)
            {
                ref PendingBlock o = ref _pendingBlocks[_pageLinks[l].Block];
                if (o.Block == block || o.Length == 0 || o.Block >= end || block >= o.Block + o.Length) continue;
                if (tx.HasMark(o.Block)) continue;
                other = o.Block;
                otherLength = o.Length;
                return true;
            }
        }
        return false;
    }
}
