using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Motr.Be.Log;
using Motr.Be.Segments;

namespace Motr.Be.Tx;

internal sealed unsafe partial class TxManager
{

    /// <summary>Ranges closer than this are logged as one region: the gap costs less than a descriptor.</summary>
    private const int MergeGap = RegionDesc.SizeOf;

    // The open group: closed transactions not yet handed to the log writer. Only ranges are kept;
    // their bytes are copied once, at seal, from live memory — which at a point where no transaction
    // is open holds exactly the state after every closed transaction (newest bytes win).
    private long _groupSeq = 1;
    private int _groupTxCount;
    private long _groupReserved;
    private long _groupFirstTxId;
    // Ranges as parallel arrays: sorting primitive keys with their items uses no comparer delegate.
    private long[] _rangeStart = new long[256];
    private long[] _rangeEnd = new long[256];
    private int _rangeCount;
    private byte[] _payloads = new byte[256];
    private int _payloadBytes;
    private int _payloadCount;
    private Transaction.ChecksumMark[] _marks = new Transaction.ChecksumMark[16];
    private long[] _markBlocks = new long[16];
    private PackedChecksumDesc[] _descs = new PackedChecksumDesc[16];
    private int _markCount;
    private bool _groupUrgent;
    private int _hasPendingGroup;
    private int _sealRequested;

    private void AppendToGroup(Transaction tx)
    {
        if (_groupTxCount == 0)
        {
            _groupFirstTxId = tx._id;
            Interlocked.Exchange(ref _hasPendingGroup, 1);
            // The log writer asks for a seal only as it becomes idle; one already idle waits to be asked. The owner
            // answers when its queue runs empty, which a locality kept busy never does (work that yields and aborts
            // in a loop): ask for the seal behind what is queued now, as the writer would have.
            if (_domain.Writer.IsIdle) RequestSeal();
        }
        _groupTxCount++;
        // A closed transaction needs log space only for what it captured: keep that much of its
        // worst-case reservation and hand the rest back, so only open transactions hold worst cases.
        long actual = LogFormat.Reservation(tx.Used);
        if (actual < tx._reservation) ReturnLocalSpace(tx._reservation - actual);
        else actual = tx._reservation;
        _groupReserved += actual;
        tx._reservation = 0;

        int n = tx._regionCount;
        if (_rangeCount + n > _rangeStart.Length) GrowRanges(_rangeCount + n);
        var regions = tx._regions;
        for (int i = 0; i < n; i++)
        {
            long start = regions[i].Offset, end = start + regions[i].Length;
            // A place every transaction of the group captures (a tree's header) is kept once: the seal
            // copies the bytes from memory, so a repeat adds nothing but sorting.
            ref Memo m = ref _rangeMemo[MemoSlot(start)];
            if (m.Group == _groupSeq && _rangeStart[m.Index] == start)
            {
                if (end > _rangeEnd[m.Index]) _rangeEnd[m.Index] = end;
                continue;
            }
            m = new Memo { Group = _groupSeq, Index = _rangeCount };
            _rangeStart[_rangeCount] = start;
            _rangeEnd[_rangeCount++] = end;
        }

        if (tx._payloadLen >= 0)
        {
            int need = PayloadHeader.SizeOf + LogFormat.Align8(tx._payloadLen);
            if (_payloadBytes + need > _payloads.Length) Array.Resize(ref _payloads, Math.Max(_payloads.Length * 2, _payloadBytes + need));
            var span = _payloads.AsSpan(_payloadBytes, need);
            span.Clear();
            MemoryMarshal.Write(span, new PayloadHeader { TxId = tx._id, Length = (uint)tx._payloadLen });
            tx.Payload.CopyTo(span[PayloadHeader.SizeOf..]);
            _payloadBytes += need;
            _payloadCount++;
        }

        for (int i = 0; i < tx._markCount; i++)
        {
            ref var t = ref tx._marks[i];
            // The same as the group's latest mark for the block: the seal would find the same last word.
            ref Memo m = ref _markMemo[MemoSlot(t.Block)];
            if (m.Group == _groupSeq && _marks[m.Index].SameAs(t)) continue;
            if (_markCount == _marks.Length)
            {
                Array.Resize(ref _marks, _marks.Length * 2);
                Array.Resize(ref _markBlocks, _marks.Length);
            }
            m = new Memo { Group = _groupSeq, Index = _markCount };
            NotePending(t);
            _markBlocks[_markCount] = t.Block;
            _marks[_markCount++] = t;
        }
    }

    // The latest range and mark the open group holds for a few places (direct-mapped by offset; an entry
    // of an older group is stale), so what every transaction repeats is kept once.
    private struct Memo
    {
        public long Group;
        public int Index;
    }

    private const int MemoBits = 6;
    private readonly Memo[] _rangeMemo = new Memo[1 << MemoBits];
    private readonly Memo[] _markMemo = new Memo[1 << MemoBits];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int MemoSlot(long offset) => (int)(((ulong)offset * 0x9E3779B97F4A7C15UL) >> (64 - MemoBits));

    // Seal ordering (RadixSort): index order for ranges and marks, and the ranges' sorted copies.
    private int[] _order = new int[256];
    private ulong[] _orderScratch = new ulong[512];
    private long[] _sortedStarts = new long[256];
    private long[] _sortedEnds = new long[256];

    private void EnsureOrder(int n)
    {
        if (_order.Length >= n) return;
        _order = new int[Math.Max(n, _order.Length * 2)];
        _orderScratch = new ulong[2 * _order.Length];
    }

    /// <summary>Sorts ranges by start (ends follow).</summary>
    private void SortRanges(Span<long> starts, Span<long> ends)
    {
        int n = starts.Length;
        EnsureOrder(n);
        if (_sortedStarts.Length < n)
        {
            _sortedStarts = new long[_order.Length];
            _sortedEnds = new long[_order.Length];
        }
        var order = _order.AsSpan(0, n);
        RadixSort.Order(starts, order, _orderScratch);
        var s = _sortedStarts.AsSpan(0, n);
        var e = _sortedEnds.AsSpan(0, n);
        for (int j = 0; j < n; j++)
        {
            s[j] = starts[order[j]];
            e[j] = ends[order[j]];
        }
        s.CopyTo(starts);
        e.CopyTo(ends);
    }

    private void AddRange(long offset, long length)
    {
        if (_rangeCount == _rangeStart.Length) GrowRanges(_rangeCount + 1);
        _rangeStart[_rangeCount] = offset;
        _rangeEnd[_rangeCount++] = offset + length;
    }

    private void GrowRanges(int need)
    {
        int size = Math.Max(_rangeStart.Length * 2, need);
        Array.Resize(ref _rangeStart, size);
        Array.Resize(ref _rangeEnd, size);
    }

    /// <summary>
    /// Turns the open group into a group chunk of the log format and hands it to the log writer.
    /// Runs on the owner thread with no transaction holding captures.
    /// </summary>
    internal void Seal()
    {
        if (_groupTxCount == 0) return;
        byte* b = Segment.Base;
        long size = Segment.Size;

        // Deferred checksums, once per block, over the block as the group leaves it; placed ones (and
        // cancels) become descriptors for the placer instead.
        int descCount = 0;
        if (_markCount > 0)
        {
            // Sort by block, and within a block by the order the marks came in: the same place may hold
            // a different block by now (freed and reallocated, perhaps with another size), so the latest wins.
            var marks = _marks.AsSpan(0, _markCount);
            var blocks = _markBlocks.AsSpan(0, _markCount);
            for (int i = 0; i < marks.Length; i++) blocks[i] = marks[i].Block;
            EnsureOrder(marks.Length);
            var order = _order.AsSpan(0, marks.Length);
            RadixSort.Order(blocks, order, _orderScratch);
            if (_descs.Length < marks.Length) _descs = new PackedChecksumDesc[Math.Max(marks.Length, _descs.Length * 2)];
            bool placedInRun = false;
            // The last block kept: blocks kept do not overlap, so only it can overlap the next one.
            long keptBlock = 0, keptEnd = 0;
            for (int i = 0; i < marks.Length; i++)
            {
                ref var m = ref marks[order[i]];
                placedInRun |= m.Kind != Transaction.MarkKind.Seal;
                if (i + 1 < marks.Length && marks[order[i + 1]].Block == m.Block) continue;
                // Overlapping another pending block (two transactions open at once, which cannot see each other's marks
                // when they defer): its CRC would be written into the other block's bytes after that one was summed.
                // Left alone, and said: a stale checksum on one block rather than the other's data changed.
                bool overlaps = m.Kind != Transaction.MarkKind.Cancel && m.Block < keptEnd;
                if (overlaps) ReportChecksumOverlap(keptBlock, keptEnd, m.Block, m.Length);
                else if (m.Kind != Transaction.MarkKind.Cancel)
                {
                    keptBlock = m.Block;
                    keptEnd = m.Block + m.Length;
                }
                if (m.Kind == Transaction.MarkKind.Placed && !overlaps)
                    _descs[descCount++] = PackedChecksumDesc.From(new ChecksumDesc { Block = m.Block, Length = (uint)m.Length, CrcOffset = (uint)m.CrcOffset, Magic = m.Magic, Kind = ChecksumDescKind.Placed });
                else if (placedInRun)
                    // Freed, or freed and reused for a block checksummed at seal: a placed checksum pending from
                    // an earlier group must not be written over whatever the place holds now.
                    _descs[descCount++] = PackedChecksumDesc.From(new ChecksumDesc { Block = m.Block, Kind = ChecksumDescKind.Cancel });
                placedInRun = false;
                if (m.Kind != Transaction.MarkKind.Seal || overlaps) continue;
                if (m.Block + m.Length > size) continue;
                if (m.Magic != 0 && *(uint*)(b + m.Block) != m.Magic) continue;
                BlockChecksum.Seal(new Span<byte>(b + m.Block, m.Length), m.CrcOffset);
                AddRange(m.Block + m.CrcOffset, 4);
            }
            _markCount = 0;
        }

        // The geometry block carries the segment's tx watermark: after recovery it says which prefix of txs the segment holds.
        ref SegmentHeader h = ref Segment.Header;
        h.LastTxId = _lastTxId;
        h.LastGroupSeq = _groupSeq;
        Segment.SealGeometry(new Span<byte>(b, SegmentHeader.SizeOf));
        AddRange(SegmentHeader.GeometryOffset, SegmentHeader.GeometryLength);

        // Sort and merge: overlapping captures of many transactions become one region.
        var starts = _rangeStart.AsSpan(0, _rangeCount);
        var ends = _rangeEnd.AsSpan(0, _rangeCount);
        SortRanges(starts, ends);
        int w = 0;
        long dataBytes = 0;
        int descTotal = 0;
        for (int i = 1; i < starts.Length; i++)
        {
            if (starts[i] <= ends[w] + MergeGap)
            {
                if (ends[i] > ends[w]) ends[w] = ends[i];
            }
            else
            {
                dataBytes += ends[w] - starts[w];
                descTotal += RegionDesc.CountFor(ends[w] - starts[w]);
                w++;
                starts[w] = starts[i];
                ends[w] = ends[i];
            }
        }
        dataBytes += ends[w] - starts[w];
        descTotal += RegionDesc.CountFor(ends[w] - starts[w]);
        int regionCount = w + 1;

        if (_shadow != null) VerifyAgainstShadow(starts[..regionCount], ends[..regionCount]);

        long length = GroupHeader.SizeOf + (long)descTotal * RegionDesc.SizeOf + LogFormat.Align8(dataBytes) + _payloadBytes + (long)descCount * PackedChecksumDesc.SizeOf;
        if (length > int.MaxValue) throw new BeException($"segment {Segment.Id}: group of {length} bytes is too large");
        byte[] buf = BufferPool.Rent((int)length);
        var chunk = buf.AsSpan(0, (int)length);
        ref GroupHeader gh = ref MemoryMarshal.AsRef<GroupHeader>(chunk);
        gh = new GroupHeader
        {
            Magic = BeConstants.GroupMagic,
            Length = (uint)length,
            SegmentId = Segment.Id,
            GroupSeq = _groupSeq,
            FirstTxId = _groupFirstTxId,
            TxCount = (uint)_groupTxCount,
            RegionCount = (uint)descTotal,
            PayloadCount = (uint)_payloadCount,
            Flags = GroupFlags.Packed,
            MarkCount = (uint)descCount,
            SegmentSize = size,
        };
        // Packed: the regions' bytes back to back (no padding each: a 16-byte descriptor and padding per region were
        // ~18% of a b+tree insert's log bytes), zero padding to 8 once after the last.
        var descs = MemoryMarshal.Cast<byte, RegionDesc>(chunk.Slice(GroupHeader.SizeOf, descTotal * RegionDesc.SizeOf));
        int pos = GroupHeader.SizeOf + descTotal * RegionDesc.SizeOf;
        int dataEnd = pos + (int)LogFormat.Align8(dataBytes);
        Unsafe.WriteUnaligned(ref chunk[dataEnd - 8], 0UL);
        int d = 0;
        for (int i = 0; i < regionCount; i++)
        {
            long at = starts[i];
            int len = (int)(ends[i] - at);
            new ReadOnlySpan<byte>(b + at, len).CopyTo(chunk[pos..]);
            pos += len;
            while (len > RegionDesc.MaxLength)
            {
                descs[d++] = RegionDesc.Make(at, RegionDesc.MaxLength);
                at += RegionDesc.MaxLength;
                len -= RegionDesc.MaxLength;
            }
            if (len > 0) descs[d++] = RegionDesc.Make(at, len);
        }
        pos = dataEnd;
        _payloads.AsSpan(0, _payloadBytes).CopyTo(chunk[pos..]);
        pos += _payloadBytes;
        MemoryMarshal.AsBytes(_descs.AsSpan(0, descCount)).CopyTo(chunk[pos..]);
        gh.Crc = Crc32C.Compute(chunk[..60], chunk[GroupHeader.SizeOf..]);

        var sealedGroup = new SealedGroup(this, _groupSeq, buf, (int)length, _groupReserved, _groupTxCount, gh.Crc);
        _groupsSealed++;
        _regionsLogged += descTotal;
        _bytesLogged += length;

        _groupSeq++;
        _groupTxCount = 0;
        _groupReserved = 0;
        _rangeCount = 0;
        ClearPending();
        _payloadBytes = 0;
        _payloadCount = 0;
        _groupUrgent = false;
        Volatile.Write(ref _hasPendingGroup, 0);
        ReleaseLocalSpaceIfWaited();
        _domain.Writer.Submit(sealedGroup);
    }

    private void ReportChecksumOverlap(long kept, long keptEnd, long block, int length) =>
        _domain.Options.Warn($"segment {Segment.Id}: group {_groupSeq}: the deferred checksum of block [0x{block:X}, +{length}) overlaps " +
            $"block [0x{kept:X}, +{keptEnd - kept}) whose checksum is deferred in the same group (by two transactions open at once, " +
            $"which cannot see each other's marks); block 0x{block:X} was left unchecksummed rather than have its CRC written into " +
            $"block 0x{kept:X}'s bytes");

    /// <summary>Log writer thread: it is idle; ask the owner to seal if there is a group waiting.</summary>
    internal void RequestSeal()
    {
        if (Volatile.Read(ref _hasPendingGroup) == 0 || _owner is null) return;
        if (Interlocked.Exchange(ref _sealRequested, 1) == 0) _owner.Post(s_sealRequested, this);
    }

    private static readonly Action<object?> s_sealRequested = static state =>
    {
        var m = (TxManager)state!;
        Volatile.Write(ref m._sealRequested, 0);
        if (m.CanSeal) m.Seal();
    };

    /// <summary>Closing with the owner stopped: seal what is left, from the closing thread.</summary>
    internal void SealOnClose()
    {
        if (_dirtyCount != 0) AbortLeftOpen();
        Seal();
        ReleaseLocalSpace();
    }

    internal bool HasOpenGroup => _groupTxCount > 0;

    /// <summary>A group is open and no transaction holds captures: live memory is the state after every closed one.</summary>
    private bool CanSeal => _groupTxCount > 0 && _dirtyCount == 0;

    // DomainOptions.VerifyCaptures: the segment as the sealed groups left it.
    private byte[]? _shadow;

    /// <summary>Every byte outside this group's regions must be as the previous groups left it.</summary>
    private void VerifyAgainstShadow(ReadOnlySpan<long> starts, ReadOnlySpan<long> ends)
    {
        long size = Segment.Size;
        if (_shadow!.Length < size) Array.Resize(ref _shadow, (int)size);
        var mem = new ReadOnlySpan<byte>(Segment.Base, (int)size);
        long pos = 0;
        for (int i = 0; i <= starts.Length; i++)
        {
            long end = i < starts.Length ? starts[i] : size;
            if (end > pos)
            {
                var a = mem.Slice((int)pos, (int)(end - pos));
                var b = _shadow.AsSpan((int)pos, (int)(end - pos));
                int at = a.CommonPrefixLength(b);
                if (at < a.Length)
                {
                    int to = at;
                    while (to < a.Length && a[to] != b[to]) to++;
                    _domain.ReportCaptureViolation($"segment {Segment.Id}: bytes [0x{pos + at:X}, 0x{pos + to:X}) changed outside any capture " +
                        $"(sealing group {_groupSeq}); memory no longer matches what the log can rebuild");
                    a[at..].CopyTo(b[at..]); // report once
                }
            }
            if (i < starts.Length)
            {
                mem.Slice((int)starts[i], (int)(ends[i] - starts[i])).CopyTo(_shadow.AsSpan((int)starts[i]));
                pos = ends[i];
            }
        }
    }

    /// <summary>
    /// For fsck: seals the open group if no transaction is mid-way, so every deferred checksum in memory
    /// is current. <see cref="ChecksumsCurrent"/> says whether that was possible.
    /// </summary>
    internal void SealForCheck()
    {
        if (CanSeal) Seal();
    }

    /// <summary>Whether every deferred checksum in memory is current (no closed change awaits a seal, none is mid-way).</summary>
    internal bool ChecksumsCurrent => _dirtyCount == 0 && _groupTxCount == 0;
}

/// <summary>
/// A group chunk ready for the log, with what the log writer needs to account for it. A value, not an object: a
/// locality seals a group per durable transaction when they come one at a time, and the group must not cost an
/// allocation (default: no group, a place in the log writer's batch already handed on).
/// </summary>
internal readonly struct SealedGroup(TxManager manager, long seq, byte[] buffer, int length, long reserved, int txCount, uint crc)
{
    public readonly TxManager Manager = manager;
    public readonly long Seq = seq;
    public readonly byte[] Buffer = buffer;
    public readonly int Length = length;
    public readonly long Reserved = reserved;
    public readonly int TxCount = txCount;
    public readonly uint Crc = crc;
}
