using System.Diagnostics;
using Motr.Be;
using Motr.Be.Storage;
using Motr.Runtime;
using Xunit.Abstractions;

namespace Motr.Crash.Tests;

/// <summary>
/// A device that starts refusing writes or syncs part-way through a b+tree workload (a failing disk, a full volume):
/// at points spread over the whole run (log records, placing, checkpoints), the domain fails with the device's error,
/// every writer gets <see cref="LogFailedException"/> instead of hanging, and the disk the failed domain leaves — as
/// it is, and as a power cut then leaves it — recovers a healthy tree equal to a prefix holding every transaction
/// reported persistent (the checks of <see cref="BTreeSimulatedCrashTests"/>). The runs share one process, as a node
/// that reopens a failed domain does: what a failure leaves behind in process-wide state (the buffer pool) is tested
/// by the runs after it.
/// </summary>
/// <remarks>Set MOTR_CRASH_SEED to run with another seed; a failure names the seed, the fault and its point.</remarks>
public sealed class DeviceFaultTests(ITestOutputHelper output)
{
    private const int Writers = 2, TxsPerWriter = 60, Points = 40;
    private static readonly TimeSpan Patience = TimeSpan.FromMinutes(1);

    /// <param name="kind">What fails from the fault point on.</param>
    /// <param name="file">Only this file's operations count and fail, or every file's. Placing writes far outnumber
    /// log writes, so a write fault on any file nearly always hits placing first: the log's own write faults need
    /// their sweep; a segment file's syncs happen only at checkpoints, so do theirs.</param>
    /// <param name="workload">"btree" (<see cref="BTreeSimWorkload"/>) or "raw" (<see cref="SimWorkload"/>: captures of the
    /// data area, payloads, named roots, segment growth).</param>
    [Theory]
    [InlineData("btree", SimFault.Write, null)]
    [InlineData("btree", SimFault.Flush, null)]
    [InlineData("btree", SimFault.Write, BeConstants.LogFileName)]
    [InlineData("btree", SimFault.Flush, "seg-0002.motr")]
    [InlineData("raw", SimFault.Write, null)]
    [InlineData("raw", SimFault.Flush, null)]
    [InlineData("raw", SimFault.Write, BeConstants.LogFileName)]
    [InlineData("raw", SimFault.Flush, "seg-0002.motr")]
    public async Task A_device_that_starts_failing_anywhere_in_a_workload_fails_the_domain_and_loses_nothing_persisted(string workload, SimFault kind, string? file)
    {
        int seed = CrashSeed.Or(4_711);
        var w = Workload.Of(workload);
        var sw = Stopwatch.StartNew();
        // A run without faults says how many device operations the workload makes.
        var reference = await w.Create();
        await RunAsync(w, reference, seed, w.Models(reference));
        int deviceOps = DeviceOps(reference, file);
        string fault = $"{workload}, " + (file is null ? $"{kind}" : $"{kind} of {file}");

        int failed = 0, withPersisted = 0;
        var named = new HashSet<string>();
        var rng = new Random(seed);
        for (int p = 0; p < Points; p++)
        {
            // Spread over nine tenths of the reference run, each point jittered within its stretch: a run's count
            // varies with how its records fall (more, smaller ones when the localities outpace the log writer),
            // and a point past a run's end fails only its close's final checkpoint, or nothing.
            int stretch = deviceOps * 9 / 10 / Points + 1;
            int at = p * stretch + rng.Next(stretch);
            string where = $"seed {seed}, {fault} fault after {at} of ~{deviceOps} device ops";
            var storage = await w.Create();
            var models = w.Models(storage);
            storage.FailAfter(at, kind, file);
            var warnings = new System.Collections.Concurrent.ConcurrentQueue<string>();
            Exception? error = await RunAsync(w, storage, seed, models, warning =>
            {
                warnings.Enqueue(warning);
                // The domain warns once its failure is set: from here on the log's header must not change.
                if (warning.StartsWith("domain ", StringComparison.Ordinal) && warning.Contains(" failed: ", StringComparison.Ordinal)) storage.Mark(FailedMark);
            });
            where += $" (the domain warned: {string.Join(" | ", warnings)})";
            int? late = CheckpointAfterFailure(storage);
            Assert.True(late is null, $"{where}: a checkpoint was written after the domain failed (op #{late})");
            storage.ClearFault();

            if (error is not null)
            {
                var logFailed = Find<LogFailedException>(error)
                    ?? throw new Xunit.Sdk.XunitException($"{where}: the run failed with {error.GetType().Name}, not LogFailedException: {error}");
                Assert.True(logFailed.ToString().Contains("sim: injected fault"), $"{where}: the error does not carry the device's: {logFailed}");
                failed++;
                named.Add(logFailed.ToString().Contains(BeConstants.LogFileName) ? BeConstants.LogFileName : "a segment file");
                if (file is not null) Assert.True(logFailed.Message.Contains(file), $"{where}: the error does not name {file}: {logFailed.Message}");
            }
            var verifier = new CrashImageVerifier($"device-fault-{fault}", models, storage, seed, options: w.Options);
            if (verifier.MarkedBefore(0, storage.OpCount) > 1 || verifier.MarkedBefore(1, storage.OpCount) > 1) withPersisted++;
            string prefixes = await VerifyLeftAndCutAsync(verifier, storage, seed, where);
            output.WriteLine($"{where}: persisted {verifier.MarkedBefore(0, storage.OpCount)}+{verifier.MarkedBefore(1, storage.OpCount)} of " +
                $"{models[0].LastId}+{models[1].LastId} closed; recovered {prefixes}; {FirstLine(error)}");
        }
        string summary = $"{fault}: {Points} fault points over ~{deviceOps} device ops (seed {seed}): {failed} runs failed the domain " +
            $"(naming {string.Join(" and ", named.Order())}), {withPersisted} with transactions reported persistent first; {sw.Elapsed.TotalSeconds:F1} s";
        Print(summary);
        // The sweep must have tested failures, most of them after some transactions were persistent.
        Assert.True(failed >= Points / 2, summary);
        Assert.True(withPersisted >= Points / 2, summary);
    }

    /// <summary>
    /// A recovery that the device interrupts (a write or a sync refused part-way through the replay, the segments'
    /// sync or the checkpoint that ends it) fails the open with the device's error, and leaves a disk that a second
    /// recovery, once the device works, brings to a healthy tree equal to a prefix holding every transaction
    /// reported persistent — from the disk as the failed open left it, and after a power cut there.
    /// </summary>
    /// <param name="kind">What fails from the fault point on.</param>
    /// <param name="file">Only this file's operations count and fail, or every file's (then the log's sync fails
    /// too, and no checkpoint can become durable: a segment file's own failing syncs need their sweep). "segment":
    /// the segment file the recovery writes most.</param>
    [Theory]
    [InlineData(SimFault.Write, null)]
    [InlineData(SimFault.Flush, null)]
    [InlineData(SimFault.Flush, "segment")]
    public async Task A_recovery_the_device_interrupts_can_be_run_again(SimFault kind, string? file)
    {
        int seed = CrashSeed.Or(4_711);
        var recorded = await BTreeSimWorkload.CreateDomainAsync();
        var models = NewModels();
        await using (var engine = await Engine.OpenAsync(BTreeSimWorkload.Options(recorded)))
            await BTreeSimWorkload.RunAsync(engine, recorded, models, seed, Writers, TxsPerWriter);
        // The disk a power cut leaves just before a checkpoint is recorded: recovery replays every record since the
        // one before (the longest such stretch of the run).
        int cut = LongestCheckpointInterval(recorded);
        // Unsynced writes dropped: the segment files lack what was placed since their last sync, so the replay
        // restores bytes that are nowhere else on the segment's side (with them kept it would rewrite equal bytes,
        // and a recovery that lost its writes would go unnoticed).
        var crashed = recorded.CrashImage(cut, CrashVariant.DropUnsynced, seed);
        var marks = new CrashImageVerifier("marks", models, recorded, seed);
        long[] floor = [marks.MarkedBefore(0, cut), marks.MarkedBefore(1, cut)];

        // How many device operations a recovery of it makes.
        var probe = crashed.Clone();
        var opened = Domain.Open(BTreeSimWorkload.Options(probe));
        long replayed = opened.Recovery.RecordsReplayed;
        if (file == "segment")
            file = DeviceOps(probe, BeConstants.SegmentFileName(1)) >= DeviceOps(probe, BeConstants.SegmentFileName(2))
                ? BeConstants.SegmentFileName(1) : BeConstants.SegmentFileName(2);
        int recoveryOps = DeviceOps(probe, file);
        string fault = file is null ? $"{kind}" : $"{kind} of {file}";
        await opened.DisposeAsync();
        Assert.True(replayed >= 5 && recoveryOps >= 20, $"recovery replays {replayed} records in {recoveryOps} device ops ({fault}): too little to interrupt");

        int failedOpens = 0;
        var rng = new Random(seed);
        for (int p = 0; p < Points; p++)
        {
            int stretch = recoveryOps / Points + 1;
            int at = p * stretch + rng.Next(stretch);
            string where = $"seed {seed}, {fault} fault after {at} of {recoveryOps} device ops of recovery";
            var image = crashed.Clone();
            image.FailAfter(at, kind, file);
            Exception? error = null;
            try
            {
                var d = Domain.Open(BTreeSimWorkload.Options(image));
                await d.DisposeAsync();
                error = d.Failure; // a fault after recovery: the close's checkpoint
            }
            catch (Exception e)
            {
                error = e;
            }
            image.ClearFault();
            if (error is not null)
            {
                Assert.True(error.ToString().Contains("sim: injected fault"), $"{where}: the open failed with something else: {error}");
                failedOpens++;
            }
            var verifier = new CrashImageVerifier($"recovery-fault-{fault}", models, image, seed, floor, Workload.Of("btree").Options);
            await VerifyLeftAndCutAsync(verifier, image, seed, where);
        }
        string summary = $"recovery, {fault}: {Points} fault points over {recoveryOps} device ops of a recovery replaying {replayed} records " +
            $"(seed {seed}): {failedOpens} opens failed, each disk then recovered";
        Print(summary);
        Assert.True(failedOpens >= Points / 2, summary);
    }

    /// <summary>
    /// A device that refuses a write or a sync while a domain is being created: the open fails with the device's
    /// error, and a second open of the folder, once the device works, creates the domain (or opens the one created)
    /// — empty, with every segment — at every point of creation, as it is and after a power cut there.
    /// </summary>
    [Theory]
    [InlineData(SimFault.Write)]
    [InlineData(SimFault.Flush)]
    public async Task A_creation_the_device_interrupts_leaves_a_folder_that_opens(SimFault kind)
    {
        var probe = new SimStorage();
        await using (var d = await Domain.OpenAsync(SimWorkload.Options(probe, createIfMissing: true))) { }
        int creationOps = DeviceOps(probe, null);
        int failedOpens = 0;
        for (int at = 0; at <= creationOps; at++)
        {
            var storage = new SimStorage();
            storage.FailAfter(at, kind);
            Exception? error = null;
            try
            {
                await using var d = await Domain.OpenAsync(SimWorkload.Options(storage, createIfMissing: true));
            }
            catch (Exception e)
            {
                error = e;
            }
            storage.ClearFault();
            string where = $"{kind} fault after {at} of {creationOps} device ops of creation";
            if (error is not null)
            {
                Assert.True(error.ToString().Contains("sim: injected fault"), $"{where}: the open failed with something else: {error}");
                failedOpens++;
            }
            foreach (var variant in new[] { CrashVariant.KeepUnsynced, CrashVariant.DropUnsynced })
            {
                var image = storage.CrashImage(storage.OpCount, variant, 1);
                await using var d = await Domain.OpenAsync(SimWorkload.Options(image, createIfMissing: true));
                string? problem = SimWorkload.NotNewDomain(d);
                Assert.True(problem is null, $"{where}, {variant}: {problem}");
            }
        }
        string summary = $"creation, {kind}: a fault at each of {creationOps + 1} points; {failedOpens} opens failed, each folder then opened";
        Print(summary);
        Assert.True(failedOpens >= creationOps / 2, summary);
    }

    /// <summary>
    /// The op index of the checkpoint (a write to the log's header page) that follows the most log writes since the
    /// one before it: a power cut just before it leaves recovery the longest replay of the run.
    /// </summary>
    private static int LongestCheckpointInterval(SimStorage storage)
    {
        int best = -1, bestWrites = -1, writes = 0;
        for (int k = 0; k < storage.OpCount; k++)
        {
            var op = storage.GetOp(k);
            if (op.Kind != SimOpKind.Write || op.File != BeConstants.LogFileName) continue;
            if (op.Offset >= 4096) { writes++; continue; }
            if (writes > bestWrites) (best, bestWrites) = (k, writes);
            writes = 0;
        }
        return best >= 0 ? best : throw new InvalidOperationException("the run recorded no checkpoint");
    }

    /// <summary>
    /// Recovers the disk as <paramref name="storage"/> holds it now and as a power cut now leaves it (unsynced writes
    /// dropped), each checked by <paramref name="verifier"/>; returns the prefixes recovered, for the test's output.
    /// </summary>
    private static async Task<string> VerifyLeftAndCutAsync(CrashImageVerifier verifier, SimStorage storage, int seed, string where)
    {
        var prefixes = new List<string>();
        foreach (var variant in new[] { CrashVariant.KeepUnsynced, CrashVariant.DropUnsynced })
        {
            var outcome = await verifier.VerifyAsync(new CrashPoint(storage.OpCount, variant, storage.CrashImage(storage.OpCount, variant, seed)));
            Assert.True(outcome.Failure is null, $"{where}: {outcome.Failure}");
            prefixes.Add($"{variant} {string.Join("+", outcome.Prefix)}");
        }
        return string.Join(", ", prefixes);
    }

    private void Print(string line)
    {
        output.WriteLine(line);
        Console.WriteLine(line);
    }

    private static BTreeSegmentModel[] NewModels()
    {
        var models = new BTreeSegmentModel[BTreeSimWorkload.Segments];
        for (int i = 0; i < models.Length; i++) models[i] = new BTreeSegmentModel();
        return models;
    }

    /// <summary>A workload of the level (a) tests, as the sweep drives it.</summary>
    private sealed record Workload(
        Func<Task<SimStorage>> Create,
        Func<SimStorage, ISegmentOracle[]> Models,
        Func<IStorage, Action<RecoveredPayload>, Action<string>, DomainOptions> Options,
        Func<Engine, SimStorage, ISegmentOracle[], int, Task> Run)
    {
        public static Workload Of(string name) => name switch
        {
            "btree" => new(BTreeSimWorkload.CreateDomainAsync, _ => NewModels(),
                (storage, onPayload, onWarning) => BTreeSimWorkload.Options(storage, onPayload: onPayload, onWarning: onWarning),
                (engine, storage, models, seed) => BTreeSimWorkload.RunAsync(engine, storage, (BTreeSegmentModel[])models, seed, Writers, TxsPerWriter)),
            "raw" => new(SimWorkload.CreateDomainAsync, RawModels,
                (storage, onPayload, onWarning) => SimWorkload.Options(storage, onPayload: onPayload, onWarning: onWarning),
                (engine, storage, models, seed) => SimWorkload.RunAsync(engine, storage, (SegmentModel[])models, seed, Writers, TxsPerWriter)),
            _ => throw new ArgumentException($"no workload '{name}'", nameof(name)),
        };

        private static ISegmentOracle[] RawModels(SimStorage storage)
        {
            var models = new SegmentModel[SimWorkload.Segments];
            for (int i = 0; i < models.Length; i++) models[i] = SimWorkload.NewModel(storage, i);
            return models;
        }
    }

    /// <summary>Opens the domain, runs the workload and closes; returns what was thrown (by the open, the run or the close), or null.</summary>
    private static async Task<Exception?> RunAsync(Workload w, SimStorage storage, int seed, ISegmentOracle[] models, Action<string>? onWarning = null)
    {
        Engine engine;
        try
        {
            engine = await Engine.OpenAsync(w.Options(storage, _ => { }, onWarning ?? (_ => { }))).WaitAsync(Patience);
        }
        catch (Exception e) when (e is not TimeoutException)
        {
            return e;
        }
        Exception? error = null;
        try
        {
            await w.Run(engine, storage, models, seed).WaitAsync(Patience);
        }
        catch (Exception e) when (e is not TimeoutException)
        {
            error = e;
        }
        try
        {
            await engine.DisposeAsync().AsTask().WaitAsync(Patience);
        }
        catch (Exception e) when (e is not TimeoutException)
        {
            error ??= e;
        }
        // A close that found the device failing (its final checkpoint) fails the domain without throwing.
        return error ?? engine.Domain.Failure;
    }

    private static string FirstLine(Exception? e) =>
        e is null ? "no error" : (Find<LogFailedException>(e)?.Message ?? e.Message).Split('\n')[0];

    private const string FailedMark = "domain failed";

    /// <summary>
    /// The op index of a checkpoint (a write to the log's header page) after the domain's failure, or null. A failed
    /// domain must record none: a file whose sync failed may hold placed bytes no later checkpoint would sync again.
    /// </summary>
    private static int? CheckpointAfterFailure(SimStorage storage)
    {
        bool failed = false;
        for (int k = 0; k < storage.OpCount; k++)
        {
            var op = storage.GetOp(k);
            if (op.Kind == SimOpKind.Marker && FailedMark.Equals(op.Tag)) failed = true;
            else if (failed && op.Kind == SimOpKind.Write && op.File == BeConstants.LogFileName && op.Offset < 4096) return k;
        }
        return null;
    }

    /// <summary>The operations a fault counts down: writes, length changes and syncs (of <paramref name="file"/> only, if given).</summary>
    private static int DeviceOps(SimStorage storage, string? file)
    {
        int n = 0;
        for (int k = 0; k < storage.OpCount; k++)
        {
            var op = storage.GetOp(k);
            if (op.Kind is SimOpKind.Write or SimOpKind.SetLength or SimOpKind.Flush && (file is null || op.File == file)) n++;
        }
        return n;
    }

    private static T? Find<T>(Exception e) where T : Exception
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            if (x is T t) return t;
            if (x is AggregateException a)
                foreach (var inner in a.InnerExceptions)
                    if (Find<T>(inner) is { } found) return found;
        }
        return null;
    }
}
