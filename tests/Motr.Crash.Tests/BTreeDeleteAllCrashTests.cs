using System.Collections.Concurrent;
using System.Diagnostics;
using Motr.Be;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Be.Tx;
using Motr.CrashChild;
using Motr.Runtime;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Crash.Tests;

/// <summary>
/// Level (a) crash test of delete-all (r.btree: "in bounded batches, each within its own tx credit, resumable after
/// a crash"): each locality fills a tree of 512-byte nodes with values in and out of node, then empties it with
/// <see cref="Tree.DeleteAllAsync"/>. Every crash image of the delete-all phase must recover to the state after a
/// prefix of its batches holding every batch reported durable (a healthy tree, the smallest keys gone, no chunk
/// leaked), and a second <see cref="Tree.DeleteAllAsync"/> on the recovered domain must finish the job: an empty tree
/// of one leaf, holding exactly the allocator space it held when it was created.
/// </summary>
/// <remarks>Set MOTR_CRASH_SEED to run with another seed; a failure message names the seed, the crash point and the variant.</remarks>
public sealed class BTreeDeleteAllCrashTests(ITestOutputHelper output)
{
    private static readonly CrashVariant[] AllVariants =
        [CrashVariant.DropUnsynced, CrashVariant.KeepUnsynced, CrashVariant.TornLast, CrashVariant.Random];

    /// <summary>Records per transaction of delete-all, per locality: different, so batches end at different keys.</summary>
    private static readonly int[] Batches = [5, 9];

    private const string DeleteAllStarts = "delete-all";

    /// <summary>
    /// The b+tree workload's options with a 4 MiB log: delete-all cuts a batch to what an eighth of the largest
    /// transaction may reserve, and on the workload's 512 KiB log that is a single delete of a tree this deep; here
    /// it is 5-9, so a crash can cut a transaction of several deletes (locality 1's batches of 9 are cut while the
    /// tree is at its deepest).
    /// </summary>
    private static DomainOptions Options(IStorage storage, bool createIfMissing = false, Action<RecoveredPayload>? onPayload = null, Action<string>? onWarning = null)
    {
        var o = BTreeSimWorkload.Options(storage, createIfMissing, onPayload: onPayload, onWarning: onWarning);
        o.LogSize = 4096 + (4L << 20);
        return o;
    }

    private void Print(string line)
    {
        output.WriteLine(line);
        Console.WriteLine(line);
    }

    [Fact]
    public async Task Every_crash_image_of_a_delete_all_recovers_a_prefix_of_its_batches_and_a_second_delete_all_finishes_it()
    {
        int seed = CrashSeed.Or(4_242);
        var sw = Stopwatch.StartNew();
        var created = new SimStorage();
        await using (var d = await Domain.OpenAsync(Options(created, createIfMissing: true))) { }
        var storage = created.Clone();
        var models = new BTreeSegmentModel[BTreeSimWorkload.Segments];
        for (int i = 0; i < models.Length; i++) models[i] = new BTreeSegmentModel();
        var keys = BTreeSimWorkload.Keys(seed);
        var usedEmpty = new long[models.Length];
        var trees = new Tree[models.Length];
        var heights = new int[models.Length];
        var large = new long[models.Length];
        long checkpointsBefore;
        var reported = new List<long>[models.Length];
        DomainStats stats;
        await using (var engine = await Engine.OpenAsync(Options(storage)))
        {
            // Fill: tx 1 creates the tree, then 1-2 inserts a tx, in a random order, each awaited durable.
            await Task.WhenAll(engine.Localities.Select(loc => loc.RunAsync(async () =>
            {
                int index = loc.Index;
                var seg = loc.Segment!;
                var model = models[index];
                var rng = new Random(unchecked(seed * 31 + index));
                Tree t;
                using (var tx = await seg.BeginAsync(Tree.CreateCredit + Segment.RootCredit))
                {
                    t = Tree.Create(tx, seg, new BTreeConfig { NodeSize = BTreeSimWorkload.NodeSize });
                    seg.SetRoot(tx, BTreeSegmentModel.RootName, t.Offset);
                    var persisted = tx.Close();
                    model.AddCreate(tx.Id, t.Offset);
                    await persisted;
                    storage.Mark(new PersistedMark(index, tx.Id));
                }
                trees[index] = t;
                usedEmpty[index] = seg.Allocator.UsedBytes;
                var live = new SortedDictionary<byte[], byte[]>(ByteKeys.Instance);
                var order = keys.OrderBy(_ => rng.Next()).ToArray();
                for (int i = 0; i < order.Length;)
                {
                    var values = new[] { Value(rng), Value(rng) };
                    int n = Math.Min(2, order.Length - i);
                    TxCredit Credit() => n == 1 ? t.InsertCredit(order[i].Length, values[0].Length)
                        : t.InsertCredit(order[i].Length, values[0].Length) + t.InsertCredit(order[i + 1].Length, values[1].Length);
                    while (n > 1 && BTreeSimWorkload.Reservation(Credit()) > BTreeSimWorkload.ReservationBudget) n--;
                    var credit = Credit();
                    using var tx = await seg.BeginAsync(credit);
                    // The tree may have grown while this waited for log space: then the credit is short; try again.
                    if (!credit.Covers(Credit()))
                    {
                        tx.Abort();
                        continue;
                    }
                    for (int k = 0; k < n; k++)
                    {
                        Assert.Equal(BTreeStatus.Ok, t.Insert(tx, order[i + k], values[k]));
                        live[order[i + k]] = values[k];
                    }
                    var persisted = tx.Close();
                    model.Add(tx.Id, live.ToArray());
                    long id = tx.Id;
                    await persisted;
                    storage.Mark(new PersistedMark(index, id));
                    i += n;
                }
                heights[index] = t.Height;
                large[index] = t.Stats.LargeChunks;
            })));
            checkpointsBefore = engine.Domain.Stats.Placing.Checkpoints;
            storage.Mark(DeleteAllStarts);

            // Empty: batch b of delete-all is the locality's tx (last fill tx + b) and deletes the next smallest keys;
            // the reports say how many (a batch may be cut shorter than asked), and the model follows them.
            // Halfway through locality 0's, a checkpoint is asked for, so delete-all runs across one whatever the timing.
            Task forced = Task.CompletedTask;
            await Task.WhenAll(engine.Localities.Select(loc => loc.RunAsync(async () =>
            {
                int index = loc.Index;
                var model = models[index];
                long first = model.LastId;
                var reports = reported[index] = new List<long>();
                int n = model.StateAfter(first).Length;
                var reporter = new DeleteAllWorkload.SyncProgress(deleted =>
                {
                    reports.Add(deleted);
                    storage.Mark(new PersistedMark(index, first + reports.Count));
                    if (index == 0 && reports.Count == n / Batches[0] / 2) forced = engine.Domain.CheckpointAsync();
                });
                long deleted = await trees[index].DeleteAllAsync(Batches[index], reporter);
                Assert.Equal(n, deleted);
                Assert.Equal(first + reports.Count, loc.Segment!.LastTxId);
            })));
            await forced;
            stats = engine.Domain.Stats;
        }
        storage.Mark("closed");
        var largestBatch = new long[models.Length];
        for (int i = 0; i < models.Length; i++)
        {
            var sorted = models[i].StateAfter(models[i].LastId);
            long first = models[i].LastId, previous = 0;
            for (int b = 0; b < reported[i].Count; b++)
            {
                long deleted = reported[i][b];
                Assert.InRange(deleted - previous, 1, Batches[i]);
                largestBatch[i] = Math.Max(largestBatch[i], deleted - previous);
                previous = deleted;
                models[i].Add(first + b + 1, sorted[(int)deleted..]);
            }
        }

        int start = 0;
        while (!(storage.GetOp(start) is { Kind: SimOpKind.Marker, Tag: DeleteAllStarts })) start++;
        var keep = BTreeSimulatedCrashTests.CrashPoints(storage, stride: 3, out _);
        Print($"delete-all workload (seed {seed}): {keys.Length} keys per locality, trees of height {string.Join(" and ", heights)} with " +
            $"{string.Join(" and ", large)} values out of node, emptied in batches of {string.Join(" and ", Batches)} asked for, " +
            $"{string.Join(" and ", largestBatch)} at most run ({reported[0].Count} + {reported[1].Count} transactions); {stats.Placing.Checkpoints - checkpointsBefore} checkpoints during delete-all; " +
            $"op log: {storage.OpCount} ops, delete-all from op {start}");
        Assert.All(heights, h => Assert.True(h >= 3, $"the trees must be deep enough for delete-all to merge and collapse levels: heights {string.Join(", ", heights)}"));
        Assert.All(large, l => Assert.True(l > 10, $"the trees must hold values out of node: {string.Join(", ", large)}"));
        Assert.True(stats.Placing.Checkpoints > checkpointsBefore, "delete-all must run across a checkpoint");
        Assert.True(largestBatch[0] > 1 && largestBatch[1] > 1, $"batches must hold several deletes: at most {string.Join(" and ", largestBatch)}");

        var v = new CrashImageVerifier("btree-delete-all", models, storage, seed, options: (image, onPayload, onWarning) =>
            Options(image, onPayload: onPayload, onWarning: onWarning));
        var resumeFailures = new ConcurrentQueue<string>();
        var remaining = new ConcurrentDictionary<long, byte>();
        int resumed = 0;
        await Parallel.ForEachAsync(storage.EnumerateCrashImages(AllVariants, seed).Where(cp => cp.OpCount >= start && keep[cp.OpCount]),
            new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
            async (cp, _) =>
            {
                var outcome = await v.VerifyAsync(cp);
                if (outcome.Failure != null) return;
                for (int i = 0; i < models.Length; i++) remaining.TryAdd(models[i].StateAfter(outcome.Prefix[i]).Length * 2 + i, 0);
                if (await ResumeAsync(cp, outcome.Prefix, models, usedEmpty) is { } problem) resumeFailures.Enqueue($"seed {seed}: {cp}: {problem}");
                Interlocked.Increment(ref resumed);
            });
        var failures = v.Failures.Concat(resumeFailures).ToList();
        Print($"crash images of the delete-all phase: {v.Checked} checked ({string.Join('+', AllVariants)}), {v.DistinctPrefixes} distinct recovered prefixes, " +
            $"{remaining.Count} distinct record counts left (over both localities), {resumed} finished by a second delete-all; {failures.Count} failures; " +
            $"{sw.Elapsed.TotalSeconds:F1} s");
        foreach (var f in failures.Take(20)) Print("FAIL " + f);
        Assert.True(failures.Count == 0, $"{failures.Count} delete-all crash images failed (seed {seed}, rerun with MOTR_CRASH_SEED={seed}); first: {failures.FirstOrDefault()}");
        // Crashes must have cut delete-all everywhere: every state of both localities, full, after each batch, and
        // empty, recovered by some image (a crash right after each batch's record write leaves exactly that batch).
        int states = reported[0].Count + reported[1].Count + 2;
        Assert.True(remaining.Count == states, $"{remaining.Count} distinct recovered record counts, expected {states} (full, after each batch, empty; both localities)");
        Assert.True(resumed >= 500, $"only {resumed} crash images resumed");
    }

    /// <summary>
    /// Opens the recovered (and cleanly closed) image with localities and runs delete-all again on each: it must
    /// delete exactly what the recovered prefix left and leave an empty one-leaf tree holding what an empty tree holds.
    /// </summary>
    private static async Task<string?> ResumeAsync(CrashPoint cp, long[] prefix, BTreeSegmentModel[] models, long[] usedEmpty)
    {
        try
        {
            await using var engine = await Engine.OpenAsync(Options(cp.Image));
            foreach (var loc in engine.Localities)
            {
                string? problem = await loc.RunAsync(async () =>
                {
                    int i = loc.Index;
                    var seg = loc.Segment!;
                    string at = $"segment {seg.Id}, recovered prefix {prefix[i]}";
                    if (!seg.TryGetRoot(BTreeSegmentModel.RootName, out long off)) return prefix[i] == 0 ? null : $"{at}: no tree to resume";
                    var t = Tree.Open(seg, off);
                    long left = models[i].StateAfter(prefix[i]).Length;
                    long deleted = await t.DeleteAllAsync(Batches[i]);
                    if (deleted != left) return $"{at}: the second delete-all deleted {deleted} records, {left} were left";
                    if (t.Count != 0 || t.Height != 1 || t.NodeCount != 1 || t.Stats.LargeChunks != 0)
                        return $"{at}: after the second delete-all: {t.Count} records, height {t.Height}, {t.NodeCount} nodes, {t.Stats.LargeChunks} chunks out of node";
                    if (TreeChecks.Segment(seg, t, out _) is { } bad) return $"{at}: after the second delete-all: {bad}";
                    if (seg.Allocator.UsedBytes != usedEmpty[i])
                        return $"{at}: the emptied tree leaves {seg.Allocator.UsedBytes} bytes allocated, the new empty tree held {usedEmpty[i]}: leaked space";
                    return null;
                });
                if (problem != null) return problem;
            }
            return null;
        }
        catch (Exception e)
        {
            return $"resuming threw {e.GetType().Name}: {e.Message}";
        }
    }

    /// <summary>A value: short (in node) or 300-2000 bytes (out of node), about as many of each.</summary>
    private static byte[] Value(Random rng)
    {
        var v = new byte[rng.Next(2) == 0 ? rng.Next(0, 60) : rng.Next(300, 2001)];
        rng.NextBytes(v);
        return v;
    }
}
