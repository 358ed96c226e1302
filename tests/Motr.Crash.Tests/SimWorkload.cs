using Motr.Be;
using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Crash.Tests;

/// <summary>
/// The random transaction workload of the simulated crash tests, and the small domain geometry that makes it
/// exercise placing, checkpoints and log wrap within a few hundred transactions.
/// </summary>
public static class SimWorkload
{
    /// <summary>Segments (and localities).</summary>
    public const int Segments = 2;

    /// <summary>Initial segment size: a 60 KiB data area, so random regions overlap often.</summary>
    public const long SegmentSize = 64 * 1024;

    /// <summary>The size segments may grow to (a page at a time, by some transactions).</summary>
    public const long SegmentMaxSize = 96 * 1024;

    /// <summary>
    /// Log size: a 64 KiB record area (the smallest the engine accepts), which a few hundred transactions wrap around
    /// twice or more, with transactions waiting for log space now and then.
    /// </summary>
    public const long LogSize = 4096 + 64 * 1024;

    /// <summary>Largest region a transaction captures.</summary>
    public const int MaxRegion = 200;

    /// <summary>Most regions a transaction captures.</summary>
    public const int MaxRegions = 4;

    /// <summary>Largest payload.</summary>
    public const int MaxPayload = 64;

    /// <summary>The options every open of a simulated domain uses (creating it only where asked).</summary>
    public static DomainOptions Options(IStorage storage, bool createIfMissing = false,
        Action<RecoveredPayload>? onPayload = null, Action<string>? onWarning = null) => new()
    {
        Storage = storage,
        CreateIfMissing = createIfMissing,
        Segments = Segments,
        SegmentSize = SegmentSize,
        SegmentMaxSize = SegmentMaxSize,
        LogSize = LogSize,
        CheckpointFraction = 0.1,
        CheckpointInterval = TimeSpan.FromMilliseconds(2),
        OnRecoveredPayload = onPayload,
        OnWarning = onWarning,
    };

    /// <summary>A new storage holding a freshly created, cleanly closed domain, with an empty op log.</summary>
    public static async Task<SimStorage> CreateDomainAsync()
    {
        var storage = new SimStorage();
        await using (var d = await Domain.OpenAsync(Options(storage, createIfMissing: true))) { }
        return storage.Clone();
    }

    /// <summary>What keeps <paramref name="d"/> from being a newly created domain (every segment, none ever changed by a transaction), or null.</summary>
    public static string? NotNewDomain(Domain d)
    {
        if (d.Segments.Count != Segments) return $"{d.Segments.Count} segments, expected {Segments}";
        foreach (var seg in d.Segments)
            if (seg.LastTxId != 0 || seg.Bytes(SegmentModel.DataStart, (int)(seg.Size - SegmentModel.DataStart)).IndexOfAnyExcept((byte)0) >= 0)
                return $"segment {seg.Id} is not empty (LastTxId {seg.LastTxId})";
        return null;
    }

    /// <summary>The model of a segment of a domain just created on <paramref name="storage"/>: its data area as the file holds it.</summary>
    public static SegmentModel NewModel(SimStorage storage, int segment)
    {
        var data = new byte[SegmentMaxSize - SegmentModel.DataStart];
        storage.ReadAll(BeConstants.SegmentFileName((ulong)segment + 1)).AsSpan((int)SegmentModel.DataStart, (int)(SegmentSize - SegmentModel.DataStart)).CopyTo(data);
        return new SegmentModel(data, SegmentSize);
    }

    /// <summary>What a workload run did.</summary>
    public sealed record Result(long Closed, long Aborted, long WithPayload, long Forced, long SetRoot, long Grew, long SpaceWaits, DomainStats Stats);

    /// <summary>Credit of one workload transaction: up to four regions, a payload, a named root and a growth.</summary>
    public static TxCredit Credit => new TxCredit(MaxRegions, MaxRegions * MaxRegion + MaxPayload) + Segment.RootCredit + Segment.GrowCredit;

    /// <summary>
    /// Runs <paramref name="writersPerLocality"/> concurrent writers on every locality of <paramref name="engine"/>,
    /// each closing or aborting <paramref name="txsPerWriter"/> random transactions (deterministic choices from
    /// <paramref name="seed"/>; the interleaving depends on timing). Closed transactions go into
    /// <paramref name="models"/>; when a transaction's persistence completes, a <see cref="PersistedMark"/> goes into
    /// <paramref name="storage"/>'s op log.
    /// </summary>
    public static async Task<Result> RunAsync(Engine engine, SimStorage storage, SegmentModel[] models, int seed,
        int writersPerLocality, int txsPerWriter)
    {
        long closed = 0, aborted = 0, payloads = 0, forced = 0, roots = 0, grown = 0;
        var tasks = new List<Task>();
        foreach (var loc in engine.Localities)
        {
            var seg = loc.Segment!;
            int index = loc.Index;
            var model = models[index];
            for (int w = 0; w < writersPerLocality; w++)
            {
                var rng = new Random(unchecked(seed * 1_000_003 + index * 7_919 + w * 104_729));
                int writer = w;
                tasks.Add(loc.RunAsync(async () =>
                {
                    var regions = new (long Offset, int Length)[MaxRegions];
                    for (int i = 0; i < txsPerWriter; i++)
                    {
                        await RunCoverage.ForcedCheckpointAsync(engine, index, writer, i, txsPerWriter);
                        if (rng.Next(4) == 0) await Task.Yield();
                        int n = rng.Next(1, MaxRegions + 1);
                        bool abort = rng.Next(8) == 0;
                        byte[]? payload = rng.Next(5) == 0 ? RandomBytes(rng, rng.Next(1, MaxPayload + 1)) : null;
                        (string Name, long Value)? root = rng.Next(8) == 0 ? ($"l{index}w{w}", rng.NextInt64()) : null;
                        bool grow = rng.Next(24) == 0;
                        using var tx = await seg.BeginAsync(Credit);
                        // From here to Close/Abort: no await (DESIGN invariant 1).
                        byte[]? before = abort ? seg.Bytes(0, (int)seg.Size).ToArray() : null;
                        // Growth: a page more address space (new space reads as zero); later regions may land in it.
                        if (grow && seg.Size < seg.MaxSize && seg.Grow(tx, seg.Size + 4096)) Interlocked.Increment(ref grown);
                        for (int r = 0; r < n; r++)
                        {
                            int len = rng.Next(1, MaxRegion + 1);
                            long off = PickOffset(rng, len, seg.Size);
                            rng.NextBytes(tx.Capture(off, len));
                            regions[r] = (off, len);
                        }
                        if (payload != null) tx.SetPayload(payload);
                        // A named root: a capture in the header's segment dictionary with a checksum deferred to the seal.
                        if (root is { } rt) seg.SetRoot(tx, rt.Name, rt.Value);
                        if (abort)
                        {
                            tx.Abort();
                            Interlocked.Increment(ref aborted);
                            if (!seg.Bytes(0, (int)seg.Size).SequenceEqual(before))
                                throw new InvalidOperationException($"segment {seg.Id}: Abort did not restore the captured bytes");
                            continue;
                        }
                        if (rng.Next(10) == 0)
                        {
                            tx.Force();
                            Interlocked.Increment(ref forced);
                        }
                        var persisted = tx.Close();
                        // The tx's changes are the bytes its regions hold at close (later regions of the same tx win).
                        var changes = new (long, byte[])[n];
                        for (int r = 0; r < n; r++) changes[r] = (regions[r].Offset, seg.Bytes(regions[r].Offset, regions[r].Length).ToArray());
                        model.Add(new ClosedTx(tx.Id, changes, payload, root, seg.Size));
                        if (root != null) Interlocked.Increment(ref roots);
                        Interlocked.Increment(ref closed);
                        if (payload != null) Interlocked.Increment(ref payloads);
                        long id = tx.Id;
                        await persisted;
                        storage.Mark(new PersistedMark(index, id));
                    }
                }));
            }
        }
        await Task.WhenAll(tasks);
        long spaceWaits = engine.Localities.Sum(l => l.Segment!.TxStats.SpaceWaits);
        return new Result(closed, aborted, payloads, forced, roots, grown, spaceWaits, engine.Domain.Stats);
    }

    private static byte[] RandomBytes(Random rng, int n)
    {
        var b = new byte[n];
        rng.NextBytes(b);
        return b;
    }

    /// <summary>
    /// A region start in the data area: often in a small hot area (overlaps between transactions), often straddling
    /// a 512-byte sector boundary (torn writes split it), otherwise anywhere.
    /// </summary>
    private static long PickOffset(Random rng, int len, long size)
    {
        long start = SegmentModel.DataStart;
        switch (rng.Next(10))
        {
            case < 4:
                return start + rng.Next(0, 2048 - len + 1);
            case < 7 when len > 1:
                long sectors = (size - start) / SimStorage.SectorSize;
                long boundary = start + SimStorage.SectorSize * rng.NextInt64(1, sectors);
                return boundary - rng.Next(1, len);
            default:
                return start + rng.NextInt64(0, size - start - len + 1);
        }
    }
}
