using Motr.Be.Alloc;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Xunit.Abstractions;

namespace Motr.Be.Tests.Alloc;

/// <summary>
/// Long random sequences of alloc / free / multi-op transactions (committed or aborted), each
/// transaction opened with exactly the allocator's published credits (plus the bytes the test writes),
/// compared after every step with a plain model of the live blocks, with fsck every few hundred
/// steps and a close + reopen (recovery) every few hundred.
/// </summary>
public sealed class AllocatorModelTests(ITestOutputHelper output)
{
    private const int Hdr = AllocFormat.ChunkHeaderSize;

    /// <summary>Random bytes; a block at offset o holds the slice starting at a hash of o.</summary>
    private static readonly byte[] Noise = MakeNoise();

    private static byte[] MakeNoise()
    {
        var b = new byte[(64 << 10) + 8192];
        new Random(12345).NextBytes(b);
        return b;
    }

    private static ReadOnlySpan<byte> PatternFor(long offset, int size) =>
        Noise.AsSpan((int)((ulong)(offset * unchecked((long)0x9E3779B97F4A7C15UL)) >> 51), size);

    private readonly record struct Block(int Size, long Usable, int Align);

    private sealed class Model
    {
        public readonly SortedDictionary<long, Block> Live = new();
        public readonly List<long> Offsets = new();   // for random picks
        public long UsedBytes;

        public void Add(long off, Block b)
        {
            Assert.True(Live.TryAdd(off, b), $"offset 0x{off:X} handed out twice");
            Offsets.Add(off);
            UsedBytes += b.Usable;
        }

        public void Remove(long off)
        {
            Assert.True(Live.Remove(off, out var b));
            int i = Offsets.IndexOf(off);
            Offsets[i] = Offsets[^1];
            Offsets.RemoveAt(Offsets.Count - 1);
            UsedBytes -= b.Usable;
        }
    }

    private sealed class Counters
    {
        public int Allocs, Aligned, Frees, OutOfSpace, MultiCommitted, MultiAborted, Checks, Growths;
        public TxCredit MaxAllocUsed, MaxFreeUsed;
    }

    private sealed class Run(int seed, long targetLive)
    {
        public readonly Random Rng = new(seed);
        public readonly long TargetLive = targetLive;
        public readonly Model Model = new();
        public readonly Counters N = new();
        public int Step;

        public int RandomSize()
        {
            double r = Rng.NextDouble();
            return r < 0.6 ? Rng.Next(1, 257) : r < 0.9 ? Rng.Next(257, 4097) : Rng.Next(4097, 65537);
        }

        public int RandomAlign()
        {
            double r = Rng.NextDouble();
            return r < 0.6 ? 8 : r < 0.7 ? 16 : 1 << Rng.Next(5, 13);
        }
    }

    [Theory]
    [InlineData(101, 12000, 4L << 20, 1536L << 10)]
    [InlineData(202, 12000, 4L << 20, 1536L << 10)]
    [InlineData(303, 8000, 1L << 20, 1100L << 10)]   // no room to grow: out of space is frequent
    public async Task Random_operations_match_the_model_across_reopens(int seed, int steps, long maxSize, long targetLive)
    {
        await using var h = await AllocHost.OpenAsync(AllocHost.SegmentSize, maxSize);
        var run = new Run(seed, targetLive);
        while (run.Step < steps)
        {
            int batch = Math.Min(steps - run.Step, 300 + run.Rng.Next(300));
            await h.RunAsync(async (seg, alloc) =>
            {
                alloc.GrowthAllowed = run.Rng.Next(4) != 0;
                for (int i = 0; i < batch; i++)
                {
                    await StepAsync(seg, alloc, run);
                    run.Step++;
                    VerifyModel(seg, alloc, run.Model, patterns: true);
                    if (run.Step % 250 == 0) FullCheck(alloc, run);
                }
            });
            await h.ReopenAsync();
            await h.Run((seg, alloc) =>
            {
                alloc.LoadAndVerify();
                VerifyModel(seg, alloc, run.Model, patterns: true);
                FullCheck(alloc, run);
            });
        }

        var n = run.N;
        var final = await h.Run((_, a) => a.GetStats());
        output.WriteLine($"seed {seed}: {steps} steps, {h.Reopens} reopens, {n.Allocs} allocs ({n.Aligned} aligned), {n.Frees} frees, " +
            $"{n.OutOfSpace} out of space, {n.Growths} growths, multi-op txs {n.MultiCommitted} committed / {n.MultiAborted} aborted, {n.Checks} fsck runs; " +
            $"max credit used: alloc {n.MaxAllocUsed}, free {n.MaxFreeUsed}; final: {final}, segment {final.SegmentSize} bytes");
        Assert.True(h.Reopens >= steps / 600, $"only {h.Reopens} reopens");
        Assert.True(n.Allocs > steps / 4, $"only {n.Allocs} allocs");
        Assert.True(n.Frees > steps / 5, $"only {n.Frees} frees");
        Assert.True(n.Aligned > steps / 20, $"only {n.Aligned} aligned allocs");
        Assert.True(n.MultiAborted > steps / 40, $"only {n.MultiAborted} aborted multi-op txs");
        Assert.True(n.MultiCommitted > steps / 100, $"only {n.MultiCommitted} committed multi-op txs");
        Assert.True(Allocator.AllocCredit.Covers(n.MaxAllocUsed));
        Assert.True(Allocator.FreeCredit.Covers(n.MaxFreeUsed));
        if (maxSize > AllocHost.SegmentSize) Assert.True(n.Growths > 0, "the segment never grew");
        else Assert.True(n.OutOfSpace > 10, $"only {n.OutOfSpace} out-of-space results under pressure");
    }

    private static async Task StepAsync(Segment seg, Allocator a, Run run)
    {
        double r = run.Rng.NextDouble();
        bool high = run.Model.UsedBytes > run.TargetLive;
        if (r < 0.08) await MultiOpAsync(seg, a, run);
        else if (run.Model.Offsets.Count == 0 || r < (high ? 0.35 : 0.62)) await AllocOneAsync(seg, a, run);
        else await FreeOneAsync(seg, a, run);
    }

    private static async Task AllocOneAsync(Segment seg, Allocator a, Run run)
    {
        int size = run.RandomSize(), align = run.RandomAlign();
        using var tx = await seg.BeginAsync(Allocator.AllocCredit + TxCredit.Region(size));
        long sizeBefore = seg.Size, usedBefore = a.UsedBytes, freeBefore = a.FreeBytes;
        var st = a.TryAlloc(tx, size, align, out long off);
        var used = tx.Used;
        Assert.True(Allocator.AllocCredit.Covers(used), $"alloc used {used}");
        run.N.MaxAllocUsed = TxCredit.Max(run.N.MaxAllocUsed, used);
        if (st == AllocStatus.OutOfSpace)
        {
            Assert.Equal(TxCredit.Zero, used);
            Assert.Equal((sizeBefore, usedBefore, freeBefore), (seg.Size, a.UsedBytes, a.FreeBytes));
            AssertReallyFull(seg, a, size, align);
            run.N.OutOfSpace++;
            tx.Abort();
            return;
        }
        Assert.Equal(AllocStatus.Ok, st);
        if (seg.Size > sizeBefore) run.N.Growths++;
        Added(seg, a, run, tx, off, size, align);
        _ = tx.Close();
    }

    private static async Task FreeOneAsync(Segment seg, Allocator a, Run run)
    {
        long off = run.Model.Offsets[run.Rng.Next(run.Model.Offsets.Count)];
        using var tx = await seg.BeginAsync(Allocator.FreeCredit);
        a.Free(tx, off);
        var used = tx.Used;
        Assert.True(Allocator.FreeCredit.Covers(used), $"free used {used}");
        run.N.MaxFreeUsed = TxCredit.Max(run.N.MaxFreeUsed, used);
        run.Model.Remove(off);
        run.N.Frees++;
        _ = tx.Close();
    }

    /// <summary>Checks the new block against the model, writes its pattern (captured) and records it.</summary>
    private static void Added(Segment seg, Allocator a, Run run, Transaction tx, long off, int size, int align)
    {
        Assert.True(off % align == 0, $"0x{off:X} not aligned to {align}");
        long usable = a.UsableSize(off);
        // At least the size; at most the size rounded to 16 plus a remainder too small to split off (< 48).
        Assert.True(usable >= size && usable <= Math.Max(16, (size + 15) / 16 * 16) + 32, $"usable {usable} for {size}");
        Assert.True(off - Hdr >= AllocFormat.HeapStart && off + usable <= seg.Size, $"0x{off:X}+{usable} outside the heap");
        run.Model.Add(off, new Block(size, usable, align));
        run.N.Allocs++;
        if (align > 16) run.N.Aligned++;
        PatternFor(off, size).CopyTo(tx.Capture(off, size));
    }

    /// <summary>An out-of-space answer must be true: no free chunk and no (grown) wilderness could hold the request.</summary>
    private static void AssertReallyFull(Segment seg, Allocator a, int size, int align)
    {
        var s = a.GetStats();
        long need = Hdr + Math.Max(16, (size + 15) / 16 * 16);
        long slack = align > 16 ? 2L * align : 0;   // the most an alignment gap can take
        long limit = a.GrowthAllowed ? seg.MaxSize : seg.Size;
        Assert.True(s.LargestFreeChunk < need + slack, $"out of space with a free chunk of {s.LargestFreeChunk} bytes for a need of {need} (align {align})");
        Assert.True(s.HeapTop + need + slack > limit, $"out of space with the wilderness [0x{s.HeapTop:X}, 0x{limit:X}) for a need of {need} (align {align})");
    }

    private static async Task MultiOpAsync(Segment seg, Allocator a, Run run)
    {
        var rng = run.Rng;
        int k = rng.Next(2, 7);
        // Plan: (isAlloc, size, align, freeIndex). A free takes a block live before the tx or one allocated by it.
        var plan = new List<(bool Alloc, int Size, int Align)>();
        var credit = TxCredit.Zero;
        for (int i = 0; i < k; i++)
        {
            bool alloc = rng.Next(2) == 0;
            if (alloc)
            {
                int size = run.RandomSize();
                plan.Add((true, size, run.RandomAlign()));
                credit += Allocator.AllocCredit + TxCredit.Region(size);
            }
            else
            {
                plan.Add((false, 0, 0));
                credit += Allocator.FreeCredit;
            }
        }
        bool abort = rng.Next(3) != 0;

        using var tx = await seg.BeginAsync(credit);
        var statsBefore = a.GetStats();
        var stateBefore = seg.Bytes(SegmentHeader.AllocatorOffset, SegmentHeader.AllocatorCrcOffset).ToArray();
        var liveBefore = new List<long>(run.Model.Offsets);
        long usedBefore = run.Model.UsedBytes;
        // Applied in op order: a block allocated and freed by the tx may have its offset reused by a later alloc.
        var added = new Dictionary<long, Block>();
        var freed = new List<long>();   // blocks live before the tx
        var candidates = new List<long>(run.Model.Offsets);
        foreach (var op in plan)
        {
            if (op.Alloc)
            {
                var st = a.TryAlloc(tx, op.Size, op.Align, out long off);
                if (st == AllocStatus.OutOfSpace) { run.N.OutOfSpace++; continue; }
                Assert.Equal(AllocStatus.Ok, st);
                Assert.True(off % op.Align == 0);
                long usable = a.UsableSize(off);
                Assert.True(usable >= op.Size);
                PatternFor(off, op.Size).CopyTo(tx.Capture(off, op.Size));
                added.Add(off, new Block(op.Size, usable, op.Align));
                candidates.Add(off);
            }
            else if (candidates.Count > 0)
            {
                int i = rng.Next(candidates.Count);
                long off = candidates[i];
                candidates[i] = candidates[^1];
                candidates.RemoveAt(candidates.Count - 1);
                a.Free(tx, off);
                if (!added.Remove(off)) freed.Add(off);
            }
        }
        Assert.True(credit.Covers(tx.Used));

        if (abort)
        {
            tx.Abort();
            run.N.MultiAborted++;
            var statsAfter = a.GetStats();
            Assert.Equal(statsBefore.ToString(), statsAfter.ToString());
            Assert.Equal(statsBefore.HeapTop, statsAfter.HeapTop);
            Assert.Equal(statsBefore.SegmentSize, statsAfter.SegmentSize);
            Assert.Equal(statsBefore.UsedChunksByClass, statsAfter.UsedChunksByClass);
            Assert.True(stateBefore.AsSpan().SequenceEqual(seg.Bytes(SegmentHeader.AllocatorOffset, SegmentHeader.AllocatorCrcOffset)),
                "abort left the allocator state block changed");
            Assert.Equal(usedBefore, a.UsedBytes);
            Assert.Equal(liveBefore.Count, run.Model.Offsets.Count);
            return;
        }

        _ = tx.Close();
        run.N.MultiCommitted++;
        foreach (long off in freed)
        {
            run.Model.Remove(off);
            run.N.Frees++;
        }
        foreach (var (off, b) in added)
        {
            run.Model.Add(off, b);
            run.N.Allocs++;
            if (b.Align > 16) run.N.Aligned++;
        }
    }

    /// <summary>Compares the segment with the model: counters, bounds, alignment, no overlap, usable sizes, patterns.</summary>
    private static void VerifyModel(Segment seg, Allocator a, Model m, bool patterns)
    {
        Assert.Equal(m.UsedBytes, a.UsedBytes);
        long prevEnd = AllocFormat.HeapStart;
        long size = seg.Size;
        foreach (var (off, b) in m.Live)
        {
            Assert.True(off - Hdr >= prevEnd, $"block 0x{off:X} overlaps the block before it (which ends at 0x{prevEnd:X})");
            Assert.True(off % b.Align == 0);
            Assert.True(off + b.Usable <= size);
            if (patterns && !seg.Bytes(off, b.Size).SequenceEqual(PatternFor(off, b.Size)))
                Assert.Fail($"block 0x{off:X} ({b.Size} bytes) lost its contents");
            prevEnd = off + b.Usable;
        }
    }

    private static void FullCheck(Allocator a, Run run)
    {
        var problems = a.Check();
        Assert.True(problems.Count == 0, string.Join("\n", problems));
        var s = a.GetStats();
        Assert.Equal(run.Model.Live.Count, s.UsedChunks);
        Assert.Equal(run.Model.UsedBytes, s.UsedBytes);
        long histogram = 0;
        foreach (long c in s.UsedChunksByClass) histogram += c;
        Assert.Equal(s.UsedChunks, histogram);
        // Every byte of the heap is accounted for: used data + headers of used chunks + free chunks.
        Assert.Equal(s.HeapTop - s.HeapStart, s.UsedBytes + s.UsedChunks * Hdr + s.FreeChunkBytes);
        foreach (var (off, b) in run.Model.Live)
            Assert.Equal(b.Usable, a.UsableSize(off));
        run.N.Checks++;
    }
}
