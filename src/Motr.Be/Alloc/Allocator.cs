using System.Numerics;
using System.Runtime.CompilerServices;
using Motr.Be.Segments;
using Motr.Be.Tx;

namespace Motr.Be.Alloc;

/// <summary>What <see cref="Allocator.TryAlloc"/> did.</summary>
public enum AllocStatus
{
    /// <summary>Allocated; the offset is valid.</summary>
    Ok,
    /// <summary>No free chunk fits and the wilderness cannot be made large enough (growth disallowed or at the segment's limit). Nothing changed.</summary>
    OutOfSpace,
    /// <summary>The size is zero or negative. Nothing changed.</summary>
    InvalidSize,
    /// <summary>The alignment is not a power of two between 1 and <see cref="AllocFormat.MaxAlignment"/>. Nothing changed.</summary>
    InvalidAlignment,
}

/// <summary>
/// The allocator inside one segment (after Motr's be/alloc): hands out blocks of the segment's heap
/// [<see cref="AllocFormat.HeapStart"/>, size) at offsets, every change captured in the caller's
/// transaction. Small requests (usable size up to 1 KiB) are served exact-fit from 64 segregated
/// free lists; larger ones best-fit from 96 binned lists, with a bitmap of non-empty lists; free
/// neighbours are coalesced through boundary tags; the untouched tail of the heap (the wilderness)
/// is carved on demand and the segment grows when it runs out.
/// </summary>
/// <remarks>
/// Use on the segment's owner thread: every member but <see cref="Segment"/> and the static credits refuses any
/// other thread with <see cref="InvalidOperationException"/> (<see cref="ObjectDisposedException"/> once the engine
/// is closed), reads included, as the b+tree and the list do: the segment's memory has no locks, the owner is the
/// lock, and a transaction checks the thread only at its first change. Every block is preceded by a 32-byte chunk
/// header (magic, flags, size, previous-chunk link, CRC32C). Data offsets are at least 16-byte aligned. See
/// docs/allocator.md for the format.
/// </remarks>
public sealed unsafe partial class Allocator
{
    private const int Hdr = AllocFormat.ChunkHeaderSize;
    private const int G = AllocFormat.Granule;
    private const int MinChunk = AllocFormat.MinChunkSize;
    private const long StateOffset = SegmentHeader.AllocatorOffset;

    /// <summary>Chunks examined per large bin when looking for the best fit (an exact fit stops the scan at once).</summary>
    internal const int BinScanLimit = 64;

    private readonly Segment _seg;

    internal Allocator(Segment segment) => _seg = segment;

    /// <summary>The segment the allocator manages.</summary>
    public Segment Segment => _seg;

    /// <summary>
    /// Whether an allocation that does not fit may grow the segment (up to <see cref="Segments.Segment.MaxSize"/>).
    /// Default true. Not persistent: a reopened segment starts with true.
    /// </summary>
    /// <exception cref="InvalidOperationException">Read or set off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public bool GrowthAllowed
    {
        get { _seg.CheckOwner("allocator growth"); return _growthAllowed; }
        set { _seg.CheckOwner("allocator growth"); _growthAllowed = value; }
    }

    private bool _growthAllowed = true;

    /// <summary>Sum of the usable sizes of allocated blocks (from the persistent state; no walk).</summary>
    /// <exception cref="InvalidOperationException">Read off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public long UsedBytes
    {
        get { _seg.CheckOwner("allocator used-bytes"); return S->UsedBytes; }
    }

    /// <summary>Bytes of free chunks (headers included) plus the wilderness up to the current segment size (from the persistent state; no walk).</summary>
    /// <exception cref="InvalidOperationException">Read off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public long FreeBytes
    {
        get { _seg.CheckOwner("allocator free-bytes"); return FreeBytesNow; }
    }

    /// <summary>Allocated blocks the persistent state records (no walk; fsck's progress total, which damage may make wrong).</summary>
    internal long UsedChunksRecorded => S->UsedChunks;

    private long FreeBytesNow => S->FreeBytes + (_seg.Size - S->HeapTop);

    // ---- credits ---------------------------------------------------------------------------------

    private static readonly TxCredit HeaderWrite = TxCredit.Region(ChunkHeader.SizeOf);
    private static readonly TxCredit LinkWrite = TxCredit.Region(ChunkHeader.LinkLength);
    // Unlinking touches (prev.Next or the head) and (next.Prev or the bitmap word).
    private static readonly TxCredit ListRemove = TxCredit.Region(sizeof(long)) * 2;
    // Pushing writes the node, the head, and (the old head's Prev or the bitmap word).
    private static readonly TxCredit ListPush = TxCredit.Region(FreeNode.SizeOf) + TxCredit.Region(sizeof(long)) * 2;
    private static readonly TxCredit StateWrite = TxCredit.Region(AllocatorState.MutableLength) + Transaction.ChecksumCredit;

    // From a free chunk: unlink it, keep a leading alignment gap as a free chunk (header + push), the
    // allocated header, a trailing remainder (header + push), the next chunk's back link, the state.
    private static readonly TxCredit FromChunkCredit =
        ListRemove + HeaderWrite + ListPush + HeaderWrite + HeaderWrite + ListPush + LinkWrite + StateWrite;

    // From the wilderness: growth, a leading alignment gap (header + push), the allocated header, the state.
    private static readonly TxCredit FromWildernessCredit =
        Segment.GrowCredit + HeaderWrite + ListPush + HeaderWrite + StateWrite;

    private static readonly TxCredit AllocCreditValue = TxCredit.Max(FromChunkCredit, FromWildernessCredit);

    // Unlink both free neighbours, write the merged header, push it, fix the next chunk's back link, the
    // state; and cancel any checksum deferred for the block (Transaction.CancelChecksum).
    private static readonly TxCredit FreeCreditValue = ListRemove * 2 + HeaderWrite + ListPush + LinkWrite + StateWrite + Transaction.ChecksumCredit;

    /// <summary>
    /// Worst-case credit of one <see cref="TryAlloc"/> or <see cref="Alloc"/> call, growth and
    /// alignment splits included (14 regions, 244 bytes).
    /// </summary>
    public static TxCredit AllocCredit => AllocCreditValue;

    /// <summary>Worst-case credit of one <see cref="Free"/> call, coalescing on both sides and the checksum cancel included (12 regions, 168 bytes).</summary>
    public static TxCredit FreeCredit => FreeCreditValue;

    // ---- raw access --------------------------------------------------------------------------------

    private AllocatorState* S
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (AllocatorState*)(_seg.Base + StateOffset);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ChunkHeader* H(long chunk) => (ChunkHeader*)(_seg.Base + chunk);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private FreeNode* Node(long chunk) => (FreeNode*)(_seg.Base + chunk + Hdr);

    private static long HeadOffset(int bin) => StateOffset + AllocatorState.HeadsOffset + (long)bin * sizeof(long);

    private static long BitmapOffset(int bin) => StateOffset + AllocatorState.BitmapOffset + (long)(bin >> 6) * sizeof(ulong);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long AlignUp(long v, long a) => (v + a - 1) & ~(a - 1);

    /// <summary>The CRC of the header at <paramref name="chunk"/>: its first 28 bytes, then the offset.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint HeaderCrc(long chunk) =>
        ~BitOperations.Crc32C(Crc32C.Append(~0u, new ReadOnlySpan<byte>(_seg.Base + chunk, ChunkHeader.CrcOffset)), (ulong)chunk);

    /// <summary>Whether <paramref name="chunk"/> is a place a chunk header may be (inside the chain, granule aligned).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool InChain(long chunk)
    {
        AllocatorState* s = S;
        return chunk >= s->HeapStart && chunk <= s->HeapTop - MinChunk && (chunk & (G - 1)) == 0;
    }

    /// <summary>Full check of one header (place, magic, CRC, flags, size); no neighbours.</summary>
    private bool HeaderValid(long chunk) =>
        InChain(chunk) && H(chunk)->Magic == AllocFormat.ChunkMagic && H(chunk)->Crc == HeaderCrc(chunk) && FieldsValid(chunk);

    /// <summary>Flags and size of the header at <paramref name="chunk"/> (an in-chain position) are plausible.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool FieldsValid(long chunk)
    {
        ChunkHeader* h = H(chunk);
        if (h->Flags != AllocFormat.FlagFree && h->Flags != AllocFormat.FlagUsed) return false;
        long size = h->Size;
        return size >= MinChunk && (size & (G - 1)) == 0 && size <= S->HeapTop - chunk;
    }

    /// <summary>Cheap check of a free-list member met while scanning (place, magic, free flag).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool LooksFree(long chunk) =>
        InChain(chunk) && H(chunk)->Magic == AllocFormat.ChunkMagic && H(chunk)->Flags == AllocFormat.FlagFree;

    /// <summary>
    /// Full check of a chunk reached through a free-list link before anything is written through it: a valid
    /// free header, followed by a chunk whose boundary tag links back to it (free chunks never touch the
    /// wilderness). A fake or stale header inside a live block fails the second part, since the chunk after it
    /// links back to the live block's own header.
    /// </summary>
    private bool IsFreeChunk(long chunk)
    {
        if (!HeaderValid(chunk) || H(chunk)->Flags != AllocFormat.FlagFree) return false;
        long after = chunk + H(chunk)->Size;
        return after < S->HeapTop && HeaderValid(after) && H(after)->Prev == chunk;
    }

    /// <summary>
    /// The heap top, refused (<see cref="BeCorruptionException"/> naming the field) when it is outside [heap start,
    /// segment size]. It was verified when the allocator loaded, but only the allocator's captured writes should move it
    /// since: a stray write over it in memory would make every chunk check that bounds a place by it (InChain,
    /// FieldsValid) accept places past committed memory, and a read there faults the process. One compare, so the
    /// calls that trust the top to bound their reads (stats, free, usable size, walks, carving the wilderness) make it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long CheckedTop(string op)
    {
        long top = S->HeapTop;
        if ((ulong)(top - AllocFormat.HeapStart) > (ulong)(_seg.Size - AllocFormat.HeapStart)) ThrowTopOutside(op, top);
        return top;
    }

    // ---- alloc --------------------------------------------------------------------------------------

    /// <summary>
    /// Allocates a block of at least <paramref name="size"/> bytes whose offset is a multiple of
    /// <paramref name="alignment"/> (a power of two up to a page; anything below 16 gives 16), capturing
    /// every change in <paramref name="tx"/>, which must have <see cref="AllocCredit"/> left. The block's
    /// bytes are not initialised. Expected failures are statuses, and change nothing. The transaction is checked
    /// first: a null, ended or foreign one is refused whatever the size and alignment.
    /// </summary>
    /// <param name="tx">An open transaction on this segment.</param>
    /// <param name="size">Bytes wanted (at least 1).</param>
    /// <param name="alignment">Alignment of the returned offset.</param>
    /// <param name="offset">The block's offset in the segment when the status is <see cref="AllocStatus.Ok"/>, else 0.</param>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> is null.</exception>
    /// <exception cref="TxUsageException">The transaction is not open, belongs to another segment, or lacks the credit (nothing was captured).</exception>
    /// <exception cref="BeCorruptionException">A free list or chunk header the allocator needs is damaged, or the heap top in memory is
    /// outside [heap start, segment size] (nothing was changed).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public AllocStatus TryAlloc(Transaction tx, long size, int alignment, out long offset)
    {
        offset = 0;
        _seg.CheckOwner("allocator alloc");
        CheckTx(tx, AllocCreditValue, "alloc");
        if (size <= 0) return AllocStatus.InvalidSize;
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0 || alignment > AllocFormat.MaxAlignment) return AllocStatus.InvalidAlignment;
        if (size > _seg.MaxSize) return AllocStatus.OutOfSpace;
        long need = Hdr + Math.Max(G, AlignUp(size, G));
        int align = Math.Max(alignment, G);

        long chunk = FindFree(need, align, BinScanLimit, out long gap);
        if (chunk != 0)
        {
            offset = TakeFromFree(tx, chunk, need, gap);
            return AllocStatus.Ok;
        }

        long top = CheckedTop("alloc");
        long wGap = Gap(top, align);
        long end = top + wGap + need;
        long unpaddedNeed = need, unpaddedEnd = end;
        if (align > G)
        {
            // Pad the block's end so that the next block of this alignment starts right after it, when the padding is
            // less than a minimal chunk: that next block's leading gap would be grown by the alignment into a free
            // chunk that only small requests can use — 96 bytes stranded in front of every b+tree node carved after
            // another. (A block may already exceed its request by a remainder too small to split off; no more here.)
            long padded = AlignUp(end + Hdr, align) - Hdr;
            if (padded - end < MinChunk && (padded <= _seg.Size || CanGrowTo(padded)))
            {
                need += padded - end;
                end = padded;
            }
        }
        if (end <= _seg.Size || CanGrowTo(end))
        {
            // The gap is pushed onto its list, which writes the old head's back link: check that head as every other
            // push does, and before the growth, the first capture.
            if (wGap > 0) ValidateHead(AllocFormat.BinOf(wGap));
            if (end > _seg.Size && !TryGrow(tx, end))
            {
                // The growth failed below the limit (the process cannot get the memory; nothing was captured): a block
                // whose padding alone asked for it still fits as the segment is, without the padding; another may fit a
                // free chunk the bounded scan passed over (below).
                need = unpaddedNeed;
                end = unpaddedEnd;
            }
            if (end <= _seg.Size)
            {
                offset = CarveWilderness(tx, top, wGap, need);
                return AllocStatus.Ok;
            }
        }

        // Last resort before giving up: scan every free list whole, so a fitting chunk that the
        // bounded best-fit scan passed over is still found. Out of space means nothing fits.
        chunk = FindFree(need, align, int.MaxValue, out gap);
        if (chunk == 0) return AllocStatus.OutOfSpace;
        offset = TakeFromFree(tx, chunk, need, gap);
        return AllocStatus.Ok;
    }

    /// <summary>
    /// Allocates like <see cref="TryAlloc"/> and returns the block's offset.
    /// </summary>
    /// <exception cref="BeException">The block cannot be allocated (out of space, or an invalid size or alignment); the message names the segment, the size and the free space.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> is null.</exception>
    /// <exception cref="TxUsageException">The transaction is not open, belongs to another segment, or lacks the credit (nothing was captured).</exception>
    /// <exception cref="BeCorruptionException">A free list or chunk header the allocator needs is damaged (nothing was changed).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public long Alloc(Transaction tx, long size, int alignment = 8)
    {
        var status = TryAlloc(tx, size, alignment, out long offset);
        if (status != AllocStatus.Ok) ThrowAllocFailed(status, size, alignment);
        return offset;
    }

    /// <summary>Leading gap before a chunk at <paramref name="chunk"/> so that its data is aligned: 0 or at least a minimal chunk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Gap(long chunk, int align)
    {
        if (align <= G) return 0;
        long gap = AlignUp(chunk + Hdr, align) - Hdr - chunk;
        if (gap != 0 && gap < MinChunk) gap += align;
        return gap;
    }

    /// <summary>Index of the first non-empty free list at or after <paramref name="bin"/>, or -1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int NextNonEmpty(int bin)
    {
        AllocatorState* s = S;
        for (int w = bin >> 6; w < AllocFormat.BitmapWords; w++)
        {
            ulong bits = s->Bitmap[w];
            if (w == bin >> 6) bits &= ~0UL << (bin & 63);
            if (w == AllocFormat.BitmapWords - 1) bits &= AllocFormat.LastBitmapWordMask; // stray bits name no list
            if (bits != 0) return (w << 6) + BitOperations.TrailingZeroCount(bits);
        }
        return -1;
    }

    /// <summary>
    /// The smallest fitting free chunk (exact class first, then best fit over bins, examining at most
    /// <paramref name="scanLimit"/> chunks per list), or 0. Reads only.
    /// </summary>
    private long FindFree(long need, int align, int scanLimit, out long gap)
    {
        gap = 0;
        long listMax = S->FreeChunks;   // a list longer than this has a cycle
        for (int bin = NextNonEmpty(AllocFormat.BinOf(need)); bin >= 0; bin = bin + 1 < AllocFormat.BinCount ? NextNonEmpty(bin + 1) : -1)
        {
            long head = S->Heads[bin];
            if (bin < AllocFormat.SmallClassCount && align == G)
            {
                // Exact-fit class: every member has the class size, which is at least the need. A head of
                // another size came through a damaged link; taking it would hand out a block too small.
                if (!LooksFree(head) || H(head)->Size != Hdr + (long)(bin + 1) * G) ThrowListCorrupt(bin, head);
                return head;
            }
            long best = 0, bestSize = long.MaxValue, bestGap = 0;
            int seen = 0;
            for (long c = head; c != 0 && seen < scanLimit; seen++)
            {
                if (seen >= listMax) ThrowListCorrupt(bin, c);
                if (!LooksFree(c)) ThrowListCorrupt(bin, c);
                long size = H(c)->Size;
                long g = Gap(c, align);
                if (g + need <= size && size < bestSize)
                {
                    best = c;
                    bestSize = size;
                    bestGap = g;
                    if (size - g - need < MinChunk) break; // nothing smaller can fit better
                }
                c = Node(c)->Next;
            }
            if (best != 0)
            {
                gap = bestGap;
                return best;
            }
        }
        return 0;
    }

    /// <summary>Allocates from free chunk <paramref name="c"/>: splits off the leading gap and a trailing remainder as free chunks.</summary>
    private long TakeFromFree(Transaction tx, long c, long need, long gap)
    {
        // Validate everything this will touch before the first capture, so a damaged heap changes nothing.
        if (!HeaderValid(c) || H(c)->Flags != AllocFormat.FlagFree) ThrowCorrupt(c, "free-list member has a damaged header");
        long size = H(c)->Size;
        long prev = H(c)->Prev;
        long next = c + size;
        if (next >= S->HeapTop || !HeaderValid(next) || H(next)->Prev != c) ThrowCorrupt(c, $"free chunk of {size} bytes is not followed by a chunk linking back to it");
        if (gap + need > size) ThrowCorrupt(c, $"free chunk of {size} bytes cannot hold the {gap + need} bytes its free list promised");
        ValidateLinks(c);
        long rem = size - gap - need;
        if (gap > 0) ValidateHead(AllocFormat.BinOf(gap));
        if (rem >= MinChunk) ValidateHead(AllocFormat.BinOf(rem));

        ref AllocatorState st = ref CaptureState(tx);
        Unlink(tx, c, AllocFormat.BinOf(size));
        st.FreeBytes -= size;
        st.FreeChunks--;

        long a = c + gap;
        long aSize = rem >= MinChunk ? need : need + rem;
        long aPrev = prev;
        if (gap > 0)
        {
            AddFreeChunk(tx, ref st, c, gap, prev);
            aPrev = c;
        }
        WriteHeader(tx, a, aSize, aPrev, AllocFormat.FlagUsed);
        st.UsedBytes += aSize - Hdr;
        st.UsedChunks++;
        long last = a;
        if (rem >= MinChunk)
        {
            long r = a + need;
            AddFreeChunk(tx, ref st, r, rem, a);
            last = r;
        }
        if (last != c) SetPrevLink(tx, next, last);
        SealState(tx);
        return a + Hdr;
    }

    /// <summary>Allocates at the start of the wilderness (which the caller made large enough).</summary>
    private long CarveWilderness(Transaction tx, long top, long gap, long need)
    {
        ref AllocatorState st = ref CaptureState(tx);
        long prev = st.LastChunk;
        if (gap > 0)
        {
            AddFreeChunk(tx, ref st, top, gap, prev);
            prev = top;
        }
        long a = top + gap;
        WriteHeader(tx, a, need, prev, AllocFormat.FlagUsed);
        st.HeapTop = a + need;
        st.LastChunk = a;
        st.UsedBytes += need - Hdr;
        st.UsedChunks++;
        SealState(tx);
        return a + Hdr;
    }

    /// <summary>Whether <see cref="TryGrow"/> would succeed for <paramref name="end"/>.</summary>
    private bool CanGrowTo(long end) => _growthAllowed && end <= _seg.MaxSize;

    /// <summary>Grows the segment so the wilderness reaches <paramref name="end"/>: by max(needed, a quarter of the size), page rounded, capped at the limit.</summary>
    private bool TryGrow(Transaction tx, long end)
    {
        long cur = _seg.Size, max = _seg.MaxSize;
        if (!_growthAllowed || end > max) return false;
        long target = AlignUp(Math.Max(end, cur + cur / 4), BeConstants.PageSize);
        if (target > max) target = max;
        return _seg.Grow(tx, target);
    }

    // ---- free ---------------------------------------------------------------------------------------

    /// <summary>
    /// Frees the block at <paramref name="offset"/> (as returned by <see cref="TryAlloc"/>), coalescing
    /// it with free neighbours and with the wilderness; <paramref name="tx"/> must have <see cref="FreeCredit"/> left.
    /// </summary>
    /// <exception cref="BeException">The offset is not an allocated block: a double free or a wild offset (nothing was changed).</exception>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> is null.</exception>
    /// <exception cref="TxUsageException">The transaction is not open, belongs to another segment, or lacks the credit (nothing was captured).</exception>
    /// <exception cref="BeCorruptionException">A free neighbour or free list the free must change is damaged, or the heap top in memory is
    /// outside [heap start, segment size] (nothing was changed).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void Free(Transaction tx, long offset)
    {
        _seg.CheckOwner("allocator free");
        CheckTx(tx, FreeCreditValue, "free");
        long c = ValidateAllocated(offset, "free");
        ChunkHeader* h = H(c);
        long size = h->Size;
        long start = c, end = c + size, mergedPrev = h->Prev;
        long top = S->HeapTop;

        long p = h->Prev;
        bool prevFree = p != 0 && H(p)->Flags == AllocFormat.FlagFree;
        bool nextFree = end < top && H(end)->Flags == AllocFormat.FlagFree;
        long pSize = 0, nSize = 0;
        if (prevFree)
        {
            ValidateLinks(p);
            pSize = H(p)->Size;
        }
        if (nextFree)
        {
            nSize = H(end)->Size;
            long after = end + nSize;
            if (after >= top || !HeaderValid(after) || H(after)->Prev != end) ThrowCorrupt(end, "free chunk is not followed by a chunk linking back to it");
            ValidateLinks(end);
        }
        long mergedEnd = end + nSize;
        if (mergedEnd != top) ValidateHead(AllocFormat.BinOf(mergedEnd - (prevFree ? p : c)));

        ref AllocatorState st = ref CaptureState(tx);
        st.UsedBytes -= size - Hdr;
        st.UsedChunks--;
        if (prevFree)
        {
            Unlink(tx, p, AllocFormat.BinOf(pSize));
            st.FreeBytes -= pSize;
            st.FreeChunks--;
            start = p;
            mergedPrev = H(p)->Prev;
        }
        if (nextFree)
        {
            Unlink(tx, end, AllocFormat.BinOf(nSize));
            st.FreeBytes -= nSize;
            st.FreeChunks--;
            end += nSize;
        }
        if (end == top)
        {
            // The block (with a free predecessor) returns to the wilderness.
            st.HeapTop = start;
            st.LastChunk = mergedPrev;
        }
        else
        {
            long merged = end - start;
            AddFreeChunk(tx, ref st, start, merged, mergedPrev);
            if (H(end)->Prev != start) SetPrevLink(tx, end, start);
        }
        SealState(tx);
        // The place may soon hold other data: no checksum deferred for the block may be written over it.
        tx.CancelChecksum(offset);
    }

    /// <summary>Bytes usable at <paramref name="offset"/> (an allocated block): at least what was asked for.</summary>
    /// <exception cref="BeException">The offset is not an allocated block.</exception>
    /// <exception cref="BeCorruptionException">The heap top in memory is outside [heap start, segment size] (the message names it).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public long UsableSize(long offset)
    {
        _seg.CheckOwner("allocator usable-size");
        long c = ValidateAllocated(offset, "usable size of");
        return H(c)->Size - Hdr;
    }

    /// <summary>
    /// Checks that <paramref name="offset"/> is the data of an allocated chunk: in the heap, aligned,
    /// a valid used header, and neighbours that link to it (which rules out stale headers left inside
    /// coalesced chunks). Returns the chunk's offset.
    /// </summary>
    private long ValidateAllocated(long offset, string op)
    {
        CheckedTop(op);
        long c = offset - Hdr;
        AllocatorState* s = S;
        if ((offset & (G - 1)) != 0 || c < s->HeapStart || c > s->HeapTop - MinChunk)
            ThrowBadFree(op, offset, $"it is not inside the heap's chunks [0x{s->HeapStart + Hdr:X}, 0x{s->HeapTop:X}) at a 16-byte boundary: a wild offset " +
                "(or a double free of a block already returned to the wilderness)");
        ChunkHeader* h = H(c);
        if (h->Magic != AllocFormat.ChunkMagic)
            ThrowBadFree(op, offset, $"no chunk header precedes it (magic 0x{h->Magic:X8}): a wild offset");
        if (h->Crc != HeaderCrc(c))
            ThrowBadFree(op, offset, $"the chunk header's checksum does not match (stored 0x{h->Crc:X8}, computed 0x{HeaderCrc(c):X8}): a wild offset or a damaged header");
        if (!FieldsValid(c))
            ThrowBadFree(op, offset, $"the chunk header is invalid (flags 0x{h->Flags:X4}, size {h->Size})");
        long p = h->Prev, end = c + h->Size;
        bool prevOk = p == 0 ? c == s->HeapStart : p < c && HeaderValid(p) && p + H(p)->Size == c;
        bool nextOk = end == s->HeapTop ? s->LastChunk == c : HeaderValid(end) && H(end)->Prev == c;
        if (!prevOk || !nextOk)
            ThrowBadFree(op, offset, "its neighbours do not link to its chunk (a stale header inside another block): a wild offset or a double free");
        if (h->Flags == AllocFormat.FlagFree)
            ThrowBadFree(op, offset, "the block is already free: a double free");
        return c;
    }

    /// <summary>
    /// Checks the free-list links of free chunk <paramref name="c"/> (its header already checked) before it is
    /// unlinked, the way a safe unlink does: each neighbour is a real free chunk that links back to
    /// <paramref name="c"/>, and a chunk without a predecessor is its list's head. Free-list links carry no
    /// checksum of their own; without this, one damaged link makes the unlink write list pointers into a live
    /// block and makes a later allocation hand out a chunk too small or one already in use.
    /// </summary>
    private void ValidateLinks(long c)
    {
        FreeNode* n = Node(c);
        long next = n->Next, prev = n->Prev;
        if (next != 0 && (!IsFreeChunk(next) || Node(next)->Prev != c))
            ThrowCorrupt(c, $"free-list link to 0x{next:X} does not lead to a free chunk linking back to it");
        if (prev != 0)
        {
            if (!IsFreeChunk(prev) || Node(prev)->Next != c)
                ThrowCorrupt(c, $"free-list back link to 0x{prev:X} does not lead to a free chunk linking to it");
        }
        else
        {
            int bin = AllocFormat.BinOf(H(c)->Size);
            if (S->Heads[bin] != c)
                ThrowCorrupt(c, $"it has no predecessor on free list {bin}, but the list starts at 0x{S->Heads[bin]:X}");
        }
    }

    /// <summary>Checks the head of free list <paramref name="bin"/> before a chunk is pushed in front of it (the push writes its back link).</summary>
    private void ValidateHead(int bin)
    {
        long head = S->Heads[bin];
        if (head != 0 && (!IsFreeChunk(head) || Node(head)->Prev != 0 || AllocFormat.BinOf(H(head)->Size) != bin))
            ThrowListCorrupt(bin, head);
    }

    // ---- captured writes ----------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref AllocatorState CaptureState(Transaction tx)
    {
        tx.CaptureHeader(StateOffset + AllocatorState.MutableOffset, AllocatorState.MutableLength);
        _changes++; // every alloc and free passes here once: a walk started before it is stale
        return ref *S;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SealState(Transaction tx) =>
        tx.DeferHeaderChecksum(StateOffset, SegmentHeader.AllocatorLength, SegmentHeader.AllocatorCrcOffset);

    /// <summary>Makes [chunk, chunk + size) a free chunk: header, free list, counters.</summary>
    private void AddFreeChunk(Transaction tx, ref AllocatorState st, long chunk, long size, long prev)
    {
        WriteHeader(tx, chunk, size, prev, AllocFormat.FlagFree);
        Push(tx, chunk, AllocFormat.BinOf(size));
        st.FreeBytes += size;
        st.FreeChunks++;
    }

    private void WriteHeader(Transaction tx, long chunk, long size, long prev, ushort flags)
    {
        ref ChunkHeader h = ref tx.Capture<ChunkHeader>(chunk);
        h.Magic = AllocFormat.ChunkMagic;
        h.Flags = flags;
        h.Reserved0 = 0;
        h.Size = size;
        h.Prev = prev;
        h.Reserved1 = 0;
        h.Crc = HeaderCrc(chunk);
    }

    private void SetPrevLink(Transaction tx, long chunk, long prev)
    {
        tx.Capture(chunk + ChunkHeader.LinkOffset, ChunkHeader.LinkLength);
        ChunkHeader* h = H(chunk);
        h->Prev = prev;
        h->Crc = HeaderCrc(chunk);
    }

    private void Push(Transaction tx, long chunk, int bin)
    {
        long head = S->Heads[bin];
        ref FreeNode n = ref tx.Capture<FreeNode>(chunk + Hdr);
        n.Next = head;
        n.Prev = 0;
        if (head != 0) tx.Capture<long>(head + Hdr + 8) = chunk;
        else tx.CaptureHeader<ulong>(BitmapOffset(bin)) |= 1UL << (bin & 63);
        tx.CaptureHeader<long>(HeadOffset(bin)) = chunk;
    }

    private void Unlink(Transaction tx, long chunk, int bin)
    {
        FreeNode* n = Node(chunk);
        long next = n->Next, prev = n->Prev;
        if (prev != 0) tx.Capture<long>(prev + Hdr) = next;
        else tx.CaptureHeader<long>(HeadOffset(bin)) = next;
        if (next != 0) tx.Capture<long>(next + Hdr + 8) = prev;
        else if (prev == 0) tx.CaptureHeader<ulong>(BitmapOffset(bin)) &= ~(1UL << (bin & 63));
    }

    // ---- errors (kept out of the hot paths) ----------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckTx(Transaction tx, TxCredit need, string op)
    {
        if (tx is null || tx.M != _seg.Tx || tx.State != TxState.Open) ThrowTx(tx, op);
        if (!tx.Fits(need)) ThrowCredit(tx, need, op);
    }

    private string Where => $"{_seg.Domain.Location}/{_seg.FileName}";

    [MethodImpl(MethodImplOptions.NoInlining), System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private void ThrowTx(Transaction? tx, string op)
    {
        ArgumentNullException.ThrowIfNull(tx);
        if (tx.M != _seg.Tx)
            throw new TxUsageException($"segment {_seg.Id}: allocator {op} was given a transaction of segment {tx.Segment.Id}");
        throw new TxUsageException($"segment {_seg.Id}: allocator {op} needs an open transaction; {tx.NotOpenReason}");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowCredit(Transaction tx, TxCredit need, string op)
    {
        var left = new TxCredit(tx.Credit.Regions - tx.Used.Regions, tx.Credit.Bytes - tx.Used.Bytes);
        throw new TxUsageException($"segment {_seg.Id}: allocator {op} needs {need} of its transaction's credit, but only {left} is left " +
            $"(open the transaction with Allocator.{(op == "free" ? "FreeCredit" : "AllocCredit")} per operation)");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowAllocFailed(AllocStatus status, long size, int alignment)
    {
        long free = FreeBytesNow;
        string why = status switch
        {
            AllocStatus.InvalidSize => "the size must be at least 1",
            AllocStatus.InvalidAlignment => $"the alignment must be a power of two up to {AllocFormat.MaxAlignment}",
            // Not a shortage that freeing or growing could end: say so rather than list the free space.
            _ when size > _seg.MaxSize - AllocFormat.HeapStart - Hdr =>
                $"it can never fit: a block in this segment holds at most {_seg.MaxSize - AllocFormat.HeapStart - Hdr} bytes " +
                $"(segment limit {_seg.MaxSize}, less the {AllocFormat.HeapStart}-byte header page and a {Hdr}-byte chunk header)",
            _ => $"out of space: {free} bytes free ({S->FreeChunks} free chunks holding {S->FreeBytes} bytes, wilderness {_seg.Size - S->HeapTop} bytes), " +
                 $"segment size {_seg.Size} of at most {_seg.MaxSize}{(_growthAllowed ? "" : ", growth disallowed")}",
        };
        throw new BeException($"segment {_seg.Id} ({_seg.FileName}): cannot allocate {size} bytes aligned to {alignment}: {why}");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadFree(string op, long offset, string why) =>
        throw new BeException($"segment {_seg.Id} ({_seg.FileName}): allocator {op} 0x{offset:X} ({offset}) refused: {why}");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowCorrupt(long chunk, string what) =>
        throw new BeCorruptionException(Where, chunk, $"allocator chunk 0x{chunk:X}: {what}");

    [MethodImpl(MethodImplOptions.NoInlining), System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private void ThrowTopOutside(string op, long top) =>
        throw new BeCorruptionException(Where, StateOffset + AllocatorState.HeapTopOffset,
            $"allocator state: heap top 0x{top:X} is outside the heap [0x{AllocFormat.HeapStart:X}, segment size 0x{_seg.Size:X}] " +
            $"(damaged in memory since the allocator loaded); allocator {op} refused");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowListCorrupt(int bin, long chunk) =>
        throw new BeCorruptionException(Where, chunk, $"allocator free list {bin} holds 0x{chunk:X}, which is not a free chunk of that list");
}
