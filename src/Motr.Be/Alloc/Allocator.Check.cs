using Motr.Be.Segments;

namespace Motr.Be.Alloc;

/// <summary>A snapshot of an allocator's space, from <see cref="Allocator.GetStats"/>.</summary>
public sealed class AllocatorStats
{
    /// <summary>Sum of the usable sizes of allocated blocks (persistent counter).</summary>
    public long UsedBytes { get; init; }

    /// <summary>Free space: <see cref="FreeChunkBytes"/> plus <see cref="WildernessBytes"/>. Growth room up to the segment's limit is not included.</summary>
    public long FreeBytes { get; init; }

    /// <summary>Bytes of free chunks, headers included (persistent counter).</summary>
    public long FreeChunkBytes { get; init; }

    /// <summary>The untouched tail of the heap: [heap top, segment size).</summary>
    public long WildernessBytes { get; init; }

    /// <summary>Allocated chunks.</summary>
    public long UsedChunks { get; init; }

    /// <summary>Free chunks (the wilderness is not one).</summary>
    public long FreeChunks { get; init; }

    /// <summary>The largest free chunk, header included (0 if none).</summary>
    public long LargestFreeChunk { get; init; }

    /// <summary>The largest contiguous free space: the larger of <see cref="LargestFreeChunk"/> and <see cref="WildernessBytes"/>.</summary>
    public long LargestFree { get; init; }

    /// <summary>1 - <see cref="LargestFree"/> / <see cref="FreeBytes"/> (0 when nothing is free): 0 means all free space is one piece.</summary>
    public double Fragmentation { get; init; }

    /// <summary>Offset of the first chunk.</summary>
    public long HeapStart { get; init; }

    /// <summary>End of the chunk chain, start of the wilderness.</summary>
    public long HeapTop { get; init; }

    /// <summary>The segment's size when the snapshot was taken.</summary>
    public long SegmentSize { get; init; }

    /// <summary>
    /// Allocated chunk counts per size class: index i is the free-list index of the chunk's size
    /// (<see cref="AllocFormat.BinOf"/>; the first <see cref="AllocFormat.SmallClassCount"/> are the exact classes of
    /// usable size 16·(i+1), the rest the large bins starting at <see cref="AllocFormat.BinMinChunkSize"/>).
    /// </summary>
    public IReadOnlyList<long> UsedChunksByClass { get; init; } = Array.Empty<long>();

    /// <inheritdoc />
    public override string ToString() =>
        $"used {UsedBytes} B in {UsedChunks} chunks, free {FreeBytes} B ({FreeChunks} chunks holding {FreeChunkBytes} B, wilderness {WildernessBytes} B), " +
        $"largest free {LargestFree} B, fragmentation {Fragmentation:P1}";
}

public sealed unsafe partial class Allocator
{
    private const int MaxProblems = 200;

    /// <summary>Space statistics. Used and free totals come from the persistent state; the rest from walking every chunk (cost: one pass over the headers).</summary>
    /// <exception cref="BeCorruptionException">The chunk chain is damaged (run <see cref="Check"/> for the details), or the heap top in
    /// memory is outside [heap start, segment size] (the message names it).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public AllocatorStats GetStats()
    {
        _seg.CheckOwner("allocator stats");
        AllocatorState* s = S;
        var histogram = new long[AllocFormat.BinCount];
        long largest = 0;
        long top = CheckedTop("stats");
        for (long c = s->HeapStart; c < top;)
        {
            if (!HeaderValid(c)) ThrowCorrupt(c, "damaged chunk header in the chain (run Check for details)");
            ChunkHeader* h = H(c);
            if (h->Flags == AllocFormat.FlagFree) largest = Math.Max(largest, h->Size);
            else histogram[AllocFormat.BinOf(h->Size)]++;
            c += h->Size;
        }
        long wilderness = _seg.Size - top;
        long free = s->FreeBytes + wilderness;
        long largestFree = Math.Max(largest, wilderness);
        return new AllocatorStats
        {
            UsedBytes = s->UsedBytes,
            FreeBytes = free,
            FreeChunkBytes = s->FreeBytes,
            WildernessBytes = wilderness,
            UsedChunks = s->UsedChunks,
            FreeChunks = s->FreeChunks,
            LargestFreeChunk = largest,
            LargestFree = largestFree,
            Fragmentation = free == 0 ? 0 : 1 - (double)largestFree / free,
            HeapStart = s->HeapStart,
            HeapTop = top,
            SegmentSize = _seg.Size,
            UsedChunksByClass = histogram,
        };
    }

    /// <summary>
    /// Checks the state block against this build and the segment: magic, version, chunk header size,
    /// list count, heap start and top inside the segment, the last chunk, the list heads and the
    /// bitmap. (The domain verifies the block's CRC at open.) Called when the allocator is first used.
    /// </summary>
    /// <exception cref="BeCorruptionException">The state does not match; the message names the file, the offset and the field.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void LoadAndVerify()
    {
        _seg.CheckOwner("allocator verify");
        var problems = new List<string>();
        VerifyState(problems, stopAtFirst: true);
        if (problems.Count > 0) throw new BeCorruptionException(Where, SegmentHeader.AllocatorOffset, problems[0]);
    }

    /// <summary>
    /// Walks every chunk from the heap start (fsck) and verifies headers (magic, CRC, flags, size),
    /// boundary tags, that no two free chunks are adjacent, every free list (membership, bin, back
    /// links, no cycles, no chunk on two lists), the non-empty bitmap and the persistent counters.
    /// Returns the problems found, each naming an offset; empty means healthy. Reads only. The state
    /// block's CRC is not checked here: it is recomputed when the transaction group is sealed.
    /// </summary>
    /// <param name="cancellationToken">Stops the walk between chunks (every <see cref="CheckProgress.Interval"/>) with
    /// <see cref="OperationCanceledException"/>; nothing is changed by a check, so nothing is left half done.</param>
    /// <param name="progress">Told the bytes of the heap walked, on this thread, every <see cref="CheckProgress.Interval"/> chunks.</param>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public IReadOnlyList<string> Check(CancellationToken cancellationToken = default, IProgress<CheckProgress>? progress = null)
    {
        _seg.CheckOwner("allocator check");
        cancellationToken.ThrowIfCancellationRequested();
        var problems = new List<string>();
        if (!VerifyState(problems, stopAtFirst: false)) return problems;
        AllocatorState* s = S;
        long top = s->HeapTop;

        // 1. The chain in address order.
        var freeBins = new Dictionary<long, int>();
        long prev = 0, used = 0, usedBytes = 0, freeBytes = 0;
        bool prevFree = false;
        long c = s->HeapStart;
        long chunks = 0;
        while (c < top)
        {
            if (++chunks % CheckProgress.Interval == 0) Tick(cancellationToken, progress, c - s->HeapStart, top - s->HeapStart);
            if (!InChain(c)) { Add(problems, $"chunk chain: 0x{c:X} (after 0x{prev:X}) is not a valid chunk position below the heap top 0x{top:X}"); break; }
            ChunkHeader* h = H(c);
            if (h->Magic != AllocFormat.ChunkMagic) { Add(problems, $"chunk 0x{c:X}: bad magic 0x{h->Magic:X8}"); break; }
            if (h->Crc != HeaderCrc(c)) { Add(problems, $"chunk 0x{c:X}: header CRC mismatch (stored 0x{h->Crc:X8}, computed 0x{HeaderCrc(c):X8})"); break; }
            long size = h->Size;
            if (size < MinChunk || (size & (G - 1)) != 0 || size > top - c) { Add(problems, $"chunk 0x{c:X}: bad size {size}"); break; }
            if (h->Prev != prev) Add(problems, $"chunk 0x{c:X}: previous-chunk link is 0x{h->Prev:X}, expected 0x{prev:X}");
            if (h->Reserved0 != 0 || h->Reserved1 != 0) Add(problems, $"chunk 0x{c:X}: reserved fields are not zero");
            if (h->Flags == AllocFormat.FlagFree)
            {
                if (prevFree) Add(problems, $"chunk 0x{c:X}: free and adjacent to the free chunk 0x{prev:X} (not coalesced)");
                freeBins[c] = AllocFormat.BinOf(size);
                freeBytes += size;
                prevFree = true;
            }
            else if (h->Flags == AllocFormat.FlagUsed)
            {
                used++;
                usedBytes += size - Hdr;
                prevFree = false;
            }
            else
            {
                Add(problems, $"chunk 0x{c:X}: invalid flags 0x{h->Flags:X4}");
                prevFree = false;
            }
            prev = c;
            c += size;
        }
        progress?.Report(new CheckProgress(ChainStage, Math.Min(c, top) - s->HeapStart, top - s->HeapStart, "bytes"));
        bool chainWhole = c == top;
        if (chainWhole)
        {
            if (s->LastChunk != prev) Add(problems, $"state: last chunk is 0x{s->LastChunk:X}, the chain ends with 0x{prev:X}");
            if (prevFree) Add(problems, $"chunk 0x{prev:X}: free and adjacent to the wilderness (not returned to it)");
            if (s->UsedChunks != used) Add(problems, $"state: {s->UsedChunks} used chunks recorded, {used} found");
            if (s->UsedBytes != usedBytes) Add(problems, $"state: {s->UsedBytes} used bytes recorded, {usedBytes} found");
            if (s->FreeChunks != freeBins.Count) Add(problems, $"state: {s->FreeChunks} free chunks recorded, {freeBins.Count} found");
            if (s->FreeBytes != freeBytes) Add(problems, $"state: {s->FreeBytes} free bytes recorded, {freeBytes} found");
        }

        // 2. The free lists and the bitmap (whose last word's spare bits allocation ignores: harmless, but damage).
        ulong stray = s->Bitmap[AllocFormat.BitmapWords - 1] & ~AllocFormat.LastBitmapWordMask;
        if (stray != 0)
            Add(problems, $"allocator state: bitmap word {AllocFormat.BitmapWords - 1} has bits 0x{stray:X16} set past the {AllocFormat.BinCount} free lists");
        var listed = new HashSet<long>();
        for (int bin = 0; bin < AllocFormat.BinCount; bin++)
        {
            long head = s->Heads[bin];
            bool bit = (s->Bitmap[bin >> 6] & (1UL << (bin & 63))) != 0;
            if (bit != (head != 0)) Add(problems, $"free list {bin}: bitmap bit is {(bit ? 1 : 0)} but the list is {(head != 0 ? "not empty" : "empty")}");
            long back = 0;
            long steps = 0;
            for (long n = head; n != 0; n = Node(n)->Next)
            {
                if ((steps + 1) % CheckProgress.Interval == 0) cancellationToken.ThrowIfCancellationRequested();
                if (!InChain(n)) { Add(problems, $"free list {bin}: link 0x{n:X} (after 0x{back:X}) points outside the heap"); break; }
                if (!freeBins.TryGetValue(n, out int expected))
                {
                    if (chainWhole) Add(problems, $"free list {bin}: 0x{n:X} is not a free chunk of the chain");
                    break;
                }
                if (expected != bin) Add(problems, $"free list {bin}: chunk 0x{n:X} of {H(n)->Size} bytes belongs to list {expected}");
                if (!listed.Add(n)) { Add(problems, $"free list {bin}: chunk 0x{n:X} is listed twice (a cycle or two lists)"); break; }
                if (Node(n)->Prev != back) Add(problems, $"free list {bin}: chunk 0x{n:X} links back to 0x{Node(n)->Prev:X}, expected 0x{back:X}");
                back = n;
                if (++steps > freeBins.Count) break;
            }
        }
        if (chainWhole)
            foreach (var kv in freeBins)
                if (!listed.Contains(kv.Key)) Add(problems, $"free chunk 0x{kv.Key:X} is on no free list (lost)");
        return problems;
    }

    private const string ChainStage = "allocator chunk chain";

    private static void Tick(CancellationToken cancellationToken, IProgress<CheckProgress>? progress, long done, long total)
    {
        cancellationToken.ThrowIfCancellationRequested();
        progress?.Report(new CheckProgress(ChainStage, done, total, "bytes"));
    }

    /// <summary>Checks the state block's fields; returns whether the heap geometry is sound enough to walk.</summary>
    private bool VerifyState(List<string> problems, bool stopAtFirst)
    {
        AllocatorState* s = S;
        long size = _seg.Size;
        if (s->Magic != AllocFormat.StateMagic)
        { Add(problems, $"allocator state: bad magic 0x{s->Magic:X8}, expected 0x{AllocFormat.StateMagic:X8}"); return false; }
        if (s->Version != AllocFormat.StateVersion)
        { Add(problems, $"allocator state: format version {s->Version} is not supported; this build reads version {AllocFormat.StateVersion}"); return false; }
        if (s->ChunkHeaderSize != AllocFormat.ChunkHeaderSize || s->BinCount != AllocFormat.BinCount)
        { Add(problems, $"allocator state: made with {s->ChunkHeaderSize}-byte chunk headers and {s->BinCount} free lists; this build uses {AllocFormat.ChunkHeaderSize} and {AllocFormat.BinCount}"); return false; }
        if (s->HeapStart != AllocFormat.HeapStart)
        { Add(problems, $"allocator state: heap starts at 0x{s->HeapStart:X}, expected 0x{AllocFormat.HeapStart:X}"); return false; }
        if (s->HeapTop < s->HeapStart || s->HeapTop > size || (s->HeapTop & (G - 1)) != 0)
        { Add(problems, $"allocator state: heap top 0x{s->HeapTop:X} is not a 16-byte boundary in [0x{s->HeapStart:X}, segment size 0x{size:X}]"); return false; }
        int before = problems.Count;
        long last = s->LastChunk;
        if (s->HeapTop == s->HeapStart ? last != 0 : !InChain(last) || !HeaderValid(last) || last + H(last)->Size != s->HeapTop)
            Add(problems, $"allocator state: last chunk 0x{last:X} is not a valid chunk ending at the heap top 0x{s->HeapTop:X}");
        if (s->UsedBytes < 0 || s->FreeBytes < 0 || s->UsedChunks < 0 || s->FreeChunks < 0
            || s->UsedBytes + s->FreeBytes > s->HeapTop - s->HeapStart)
            Add(problems, $"allocator state: counters out of range (used {s->UsedBytes} B / {s->UsedChunks} chunks, free {s->FreeBytes} B / {s->FreeChunks} chunks, heap {s->HeapTop - s->HeapStart} B)");
        for (int bin = 0; bin < AllocFormat.BinCount && !(stopAtFirst && problems.Count > before); bin++)
        {
            long head = s->Heads[bin];
            if (head != 0 && !InChain(head)) Add(problems, $"allocator state: head of free list {bin} is 0x{head:X}, outside the heap");
        }
        return true;
    }

    private static void Add(List<string> problems, string problem)
    {
        if (problems.Count < MaxProblems) problems.Add(problem);
        else if (problems.Count == MaxProblems) problems.Add("(more problems not listed)");
    }
}
