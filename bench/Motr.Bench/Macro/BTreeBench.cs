using System.Diagnostics;
using System.Globalization;
using System.Runtime;
using Motr.Bench.Diagnostics;
using Motr.Bench.Peers;

namespace Motr.Bench.Macro;

/// <summary>
/// The <c>btree</c> bench (macro): a data set of random 16-byte keys with 100-byte values, and on each
/// system in turn: insert all, look all up, scan in key order, delete all. Systems: motr's b+tree on one
/// locality (<c>motr-1loc</c>) and split over two (<c>motr-2loc</c>), LMDB and SQLite. Every system
/// gets the same keys in the same orders, a warm-up on a separate small key set, and a fresh store.
/// </summary>
internal static class BTreeBench
{
    public const string Insert = "btree-insert", Lookup = "btree-lookup", Scan = "btree-scan", Delete = "btree-delete";
    public static readonly string[] Workloads = [Insert, Lookup, Scan, Delete];
    public const string Motr1 = "motr-1loc", Motr2 = "motr-2loc";
    public static readonly string[] Systems = [Motr1, Motr2, LmdbPeer.SystemName, SqliteKvPeer.SystemName];

    public const int DefaultKeys = 1_000_000, QuickKeys = 200_000, SelfCheckKeys = 3_000;
    public const int DefaultWriters = 1024;
    private const int WarmKeys = 20_000;
    private const ulong Seed = 0x5EED_B7EE_0000_0001UL;

    /// <summary>How long a scan repeats its passes.</summary>
    private static readonly TimeSpan ScanAtLeast = TimeSpan.FromSeconds(1);

    private sealed record SystemDef(string Name, Func<string, Task<KvStore>> Open);

    public static async Task<List<BenchResult>> RunAsync(BenchOptions o, BenchDirectory dir)
    {
        foreach (var w in o.Workloads ?? [])
            if (!Workloads.Contains(w, StringComparer.OrdinalIgnoreCase)) throw new UsageException($"unknown workload {w}: btree has {string.Join(", ", Workloads)}");
        foreach (var s in o.Systems ?? [])
            if (!Systems.Contains(s, StringComparer.OrdinalIgnoreCase)) throw new UsageException($"unknown system {s}: btree has {string.Join(", ", Systems)}");
        if (o.Writers is { Length: > 1 }) throw new UsageException("btree takes one --writers count");
        int n = o.Keys ?? (o.SelfCheck ? SelfCheckKeys : o.Quick ? QuickKeys : DefaultKeys);
        if (n < 1) throw new UsageException("--keys must be at least 1");
        if (o.SelfCheck && o.Rounds > 1) throw new UsageException("--self-check runs one round");
        int writers = o.Writers?[0] ?? DefaultWriters;
        var warmup = o.WarmupGiven ?? TimeSpan.FromSeconds(o.SelfCheck ? 0 : o.Quick ? 2 : 5);
        var scanAtLeast = o.SelfCheck ? TimeSpan.FromSeconds(0.05) : ScanAtLeast;
        o.Settings["keys"] = n;
        o.Settings["key_bytes"] = KeyStream.KeySize;
        o.Settings["value_bytes"] = BTreeValues.ValueSize;
        o.Settings["rounds"] = o.Rounds;
        o.Settings["warmup_seconds"] = warmup.TotalSeconds;
        o.Settings["scan_seconds"] = scanAtLeast.TotalSeconds;
        o.Settings["motr_writers_per_locality"] = writers;
        o.Settings["motr_log_mib"] = o.LogMiB;
        if (o.CheckpointFraction is double cf) o.Settings["motr_checkpoint_fraction"] = cf;
        o.Settings["motr_durability"] = "every insert and delete its own transaction, awaited durable (log fdatasync) before it is counted";
        o.Settings["peer_batch"] = LmdbPeer.Batch;
        o.Settings["lmdb_durability"] = "MDB_NOSYNC: commits not synced (not durable)";
        o.Settings["sqlite_durability"] = "journal_mode=WAL, synchronous=NORMAL: commits not synced (not durable)";
        o.Settings["quick"] = o.Quick;
        o.Settings["self_check"] = o.SelfCheck;
        o.Settings["workloads"] = string.Join(",", Workloads.Where(o.RunsWorkload));
        o.Settings["ratio_rule"] = o.Rounds > 1
            ? "ratio_vs_<baseline> = the median row's rate / the baseline's median row's rate (the two medians may come from different rounds); ratio_vs_<baseline>_by_round pairs each round's rows"
            : "ratio_vs_<baseline> = this row's rate / the baseline's rate in the same run";

        var systems = new List<SystemDef>();
        foreach (string name in Systems.Where(o.Runs))
        {
            switch (name)
            {
                case Motr1 or Motr2:
                    int localities = name == Motr1 ? 1 : 2;
                    systems.Add(new(name, async folder => await MotrKvStore.OpenAsync(name, localities, folder, n, writers, o)));
                    break;
                case LmdbPeer.SystemName:
                    if (!LmdbNative.IsAvailable() && o.SelfCheck && o.Systems is null)
                    {
                        Console.WriteLine($"self-check: lmdb left out ({LmdbPeer.MissingMessage})");
                        break;
                    }
                    if (!LmdbNative.IsAvailable()) throw new UsageException(LmdbPeer.MissingMessage);
                    systems.Add(new(name, folder => Task.FromResult<KvStore>(LmdbPeer.Open(folder, n))));
                    break;
                case SqliteKvPeer.SystemName:
                    systems.Add(new(name, folder => Task.FromResult<KvStore>(SqliteKvPeer.Open(folder))));
                    break;
            }
        }
        if (systems.Count == 0) throw new UsageException($"nothing to run: btree systems are {string.Join(", ", Systems)}");
        o.Settings["systems"] = string.Join(",", systems.Select(x => x.Name));

        Console.WriteLine($"btree: {n:N0} random {KeyStream.KeySize}-byte keys, {BTreeValues.ValueSize}-byte values" +
            (o.Quick && o.Keys is null ? $" (--quick: {QuickKeys:N0} keys instead of {DefaultKeys:N0})" : "") +
            $"; warm-up {warmup.TotalSeconds:0.##} s per system on {Math.Min(n, WarmKeys):N0} other keys; scans repeat for {scanAtLeast.TotalSeconds:0.##} s" +
            (o.SelfCheck ? "; --self-check: a check of the bench's checks, not a measurement" : ""));
        Console.WriteLine($"  motr: each insert and delete is its own transaction, awaited until durable (group commit, {writers} writers per locality);" +
            $" lmdb (MDB_NOSYNC) and sqlite (WAL, synchronous=NORMAL) batch {LmdbPeer.Batch} ops per transaction and do not sync at commit: not durable");
        long t0 = Stopwatch.GetTimestamp();
        var keys = KeySet.Generate(n, Seed);
        var warm = KeySet.Generate(Math.Min(n, WarmKeys), Seed ^ 0xFFFF);
        Console.WriteLine($"  keys generated in {Stopwatch.GetElapsedTime(t0).TotalSeconds:F2} s");

        // The host's speed drifts by tens of percent over minutes: rounds that take turns expose every system
        // to the same drift, and the median round of each keeps one slow or fast spell from deciding a ratio.
        var rounds = new List<List<BenchResult>>();
        for (int r = 1; r <= o.Rounds; r++)
        {
            if (o.Rounds > 1) Console.WriteLine($"  round {r} of {o.Rounds}");
            var round = new List<BenchResult>();
            foreach (var system in systems)
                round.AddRange(await RunSystemAsync(system, keys, warm, warmup, scanAtLeast, o, dir));
            rounds.Add(round);
        }
        if (o.SelfCheck)
            foreach (var system in systems) await SabotageChecksAsync(system, keys, scanAtLeast, dir);
        return rounds.Count == 1 ? rounds[0] : MedianRounds(rounds);
    }

    /// <summary>
    /// For every (workload, system) row of the first round, the round with the median rate (the lower of the
    /// two middle ones for an even count: a measured row, not an average), noting every round's rate.
    /// </summary>
    private static List<BenchResult> MedianRounds(List<List<BenchResult>> rounds)
    {
        var medians = new List<BenchResult>();
        foreach (var first in rounds[0])
        {
            // Round by round, this row's run in it.
            var same = rounds.Select(round => round.First(x => x.Workload == first.Workload && x.System == first.System)).ToList();
            int median = Enumerable.Range(0, same.Count).OrderBy(i => same[i].OpsPerSec).ElementAt((same.Count - 1) / 2);
            string rates = string.Join(", ", same.Select(x => x.OpsPerSec.ToString("N0", CultureInfo.InvariantCulture)));
            medians.Add(same[median] with
            {
                Notes = [.. same[median].Notes, $"rounds: {rates} ops/s; this row is round {median + 1}, the median"],
                RoundRates = same.Select(x => x.OpsPerSec).ToArray(),
                Round = median + 1,
            });
        }
        return medians;
    }

    private static async Task<List<BenchResult>> RunSystemAsync(SystemDef system, KeySet keys, KeySet warm, TimeSpan warmup, TimeSpan scanAtLeast, BenchOptions o, BenchDirectory dir)
    {
        string folder = dir.Sub(system.Name);
        string warmFolder = dir.Sub(system.Name + "-warm");
        var results = new List<BenchResult>();
        long t0 = Stopwatch.GetTimestamp();
        var store = await system.Open(folder);
        double openSecs = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        try
        {
            string warmNote = await WarmUpAsync(store, warm, warmFolder, warmup);
            BenchDirectory.Remove(warmFolder);
            foreach (string workload in Workloads)
            {
                // The insert fills the store for the others, so it runs even when not reported.
                if (workload != Insert && !o.RunsWorkload(workload)) continue;
                Settle.BetweenRows();
                store.Prepare(keys);
                long? loop0 = await store.LoopAllocatedAsync();
                using var sampler = o.AllocSample ? new AllocationSampler() : null;
                sampler?.Start();
                var a = ProcessEdge.Before();
                var run = workload switch
                {
                    Insert => await store.InsertAsync(keys),
                    Lookup => await store.LookupAsync(keys),
                    Scan => await store.ScanAsync(keys, scanAtLeast),
                    _ => await store.DeleteAsync(keys),
                };
                var b = ProcessEdge.After();
                sampler?.Stop();
                if (sampler is not null) run.Notes.Add(sampler.Note(run.Ops, "op"));
                long? loop1 = await store.LoopAllocatedAsync();
                await store.AfterAsync(workload, keys, run);
                if (workload is Insert or Delete)
                {
                    // Outside the window: the store holds exactly the data set (every key, every value), or nothing.
                    long v0 = Stopwatch.GetTimestamp();
                    await store.VerifyAsync(keys, empty: workload == Delete);
                    run.Notes.Add($"verified after the window (not in the rate): {(workload == Insert ? "the store's count, every key looked up and its whole value compared" : "the store's count is 0 and a cursor finds no record")}" +
                        $"{(store.System.StartsWith("motr", StringComparison.Ordinal) ? ", fsck of each tree" : "")}, {Stopwatch.GetElapsedTime(v0).TotalSeconds:F2} s");
                }
                if (workload == Insert) run.Notes.Add($"open {openSecs:F2} s; {warmNote}");
                if (!o.RunsWorkload(workload)) continue;
                var row = Row(workload, store, run, a, b, loop1 - loop0);
                Progress(row);
                results.Add(row);
            }
        }
        finally
        {
            await store.DisposeAsync();
            BenchDirectory.Remove(folder);
            BenchDirectory.Remove(warmFolder);
        }
        return results;
    }

    /// <summary>
    /// --self-check: the bench's checks must fail a run on a store whose contents are wrong. For each kind of
    /// damage, a fresh store gets the data set inserted, then the damage, then every check that should see it
    /// runs and must throw: the verification after the insert, the lookup window (a key dropped, a value
    /// changed: its first byte, which the window's sink covers), the scan's verifying pass, and the deletes
    /// (a key dropped: its delete fails) or the verification after them (a key added: the store is not empty).
    /// </summary>
    private static async Task SabotageChecksAsync(SystemDef system, KeySet keys, TimeSpan scanAtLeast, BenchDirectory dir)
    {
        foreach (var what in Enum.GetValues<KvStore.Sabotage>())
        {
            string folder = dir.Sub($"{system.Name}-{what}");
            var store = await system.Open(folder);
            var missed = new List<string>();
            try
            {
                await store.InsertAsync(keys);
                await store.VerifyAsync(keys, empty: false);
                await store.SabotageAsync(keys, what);
                async Task Expect(string check, Func<Task> run)
                {
                    try { await run(); }
                    catch (InvalidOperationException e)
                    {
                        Console.WriteLine($"  self-check {system.Name}, {what}: {check} failed as it must: {e.Message}");
                        return;
                    }
                    missed.Add(check);
                }
                await Expect("verification after insert", () => store.VerifyAsync(keys, empty: false));
                if (what != KvStore.Sabotage.ExtraKey) await Expect("lookup window", () => store.LookupAsync(keys));
                await Expect("scan", () => store.ScanAsync(keys, scanAtLeast));
                if (what == KvStore.Sabotage.DropKey) await Expect("delete window", () => store.DeleteAsync(keys));
                if (what == KvStore.Sabotage.ExtraKey)
                {
                    await store.DeleteAsync(keys);
                    await Expect("verification after delete", () => store.VerifyAsync(keys, empty: true));
                }
            }
            finally
            {
                await store.DisposeAsync();
                BenchDirectory.Remove(folder);
            }
            if (missed.Count > 0)
                throw new InvalidOperationException($"self-check: {system.Name} with {what}: not caught by {string.Join(", ", missed)}");
        }
    }

    /// <summary>
    /// Rounds of the four workloads on <paramref name="warm"/> in a throwaway store: JIT tiers, caches,
    /// page faults of the code. Tiered compilation promotes hot methods in the background in steps (call
    /// counting starts 100 ms after the last tier-0 compile; PGO adds an instrumented tier; the engine's
    /// long-running thread loops move by on-stack replacement), so motr's managed code keeps compiling
    /// for several seconds: the rounds go on for <paramref name="atLeast"/>, then while the JIT took more
    /// than 2 % of the last second, up to twice <paramref name="atLeast"/>. The peers' code is mostly
    /// native. Each round also takes the window edges, so the harness's own code is warm too.
    /// </summary>
    private static async Task<string> WarmUpAsync(KvStore store, KeySet warm, string folder, TimeSpan atLeast)
    {
        long start = Stopwatch.GetTimestamp();
        var w = await store.OpenWarmUpAsync(folder);
        var ends = new List<(TimeSpan At, TimeSpan Jit)> { (TimeSpan.Zero, JitInfo.GetCompilationTime()) };
        TimeSpan recentJit, recentSpan;
        try
        {
            w.Prepare(warm);
            while (true)
            {
                ProcessEdge.Before();
                await w.LoopAllocatedAsync();
                await w.InsertAsync(warm);
                await w.LookupAsync(warm);
                await w.ScanAsync(warm, TimeSpan.Zero);
                await w.DeleteAsync(warm);
                ProcessEdge.After();
                ends.Add((Stopwatch.GetElapsedTime(start), JitInfo.GetCompilationTime()));
                // the JIT over the shortest run of last rounds spanning a second
                int k = ends.Count - 2;
                while (k > 0 && ends[^1].At - ends[k].At < TimeSpan.FromSeconds(1)) k--;
                recentSpan = ends[^1].At - ends[k].At;
                recentJit = ends[^1].Jit - ends[k].Jit;
                bool quiet = recentJit.Ticks <= recentSpan.Ticks / 50;
                if (ends[^1].At >= atLeast * (quiet ? 1 : 2)) break;
            }
        }
        finally
        {
            if (!ReferenceEquals(w, store)) await w.DisposeAsync();
        }
        return $"warm-up: {ends.Count - 1} rounds of insert, lookup, scan, delete of {warm.Count:N0} keys in {Stopwatch.GetElapsedTime(start).TotalSeconds:F2} s, " +
            $"JIT {(ends[^1].Jit - ends[0].Jit).TotalMilliseconds:N0} ms ({recentJit.TotalMilliseconds:N1} ms in the last {recentSpan.TotalMilliseconds:N0} ms)";
    }

    private static BenchResult Row(string workload, KvStore store, PhaseRun run, ProcessEdge a, ProcessEdge b, long? loopAlloc)
    {
        double secs = run.Seconds;
        double window = ProcessEdge.Seconds(a, b);
        long ops = run.Ops;
        var threads = ThreadCpu.Between(a.Cpu, b.Cpu);
        double perOp(double x) => ops > 0 ? x / ops : double.NaN;
        bool scan = workload == Scan;
        string unit = scan ? "record" : "op";
        var h = run.Latency;
        var notes = new List<string>(run.Notes);
        if (scan)
            notes.Insert(0, $"scan: {run.Extra.GetValueOrDefault("passes"):N0} measured passes over {ops / Math.Max(1, run.Extra.GetValueOrDefault("passes")):N0} records " +
                $"in {secs:F2} s, {perOp(secs * 1e9):N1} ns per record (after one unmeasured pass checking count and order); p50/p99 are 0: no per-record latency");
        else
            notes.Insert(0, $"latency ({run.LatencyWhat}): p50 {h.PercentileMicros(0.5):N2} us, p90 {h.PercentileMicros(0.9):N2}, p99 {h.PercentileMicros(0.99):N2}, " +
                $"p99.9 {h.PercentileMicros(0.999):N2}, max {LatencyHistogram.TicksToMicros(h.MaxTicks):N1} ({h.Count:N0} samples)");
        notes.Add($"alloc: {perOp(b.TotalAlloc - a.TotalAlloc):N3} B/{unit} in the process" +
            (loopAlloc is long l ? $", {perOp(l):N3} B/{unit} on the locality threads" : "") + "; " + ProcessEdge.GcJitNote(a, b));
        notes.Add(ThreadCpu.PerOpNote(threads, window, ops, unit));

        var extra = new Dictionary<string, double>(run.Extra)
        {
            ["cpu_us_per_op"] = ThreadCpu.PerOpMicros(threads, window, ops),
            ["other_processes_cores"] = threads.Where(t => t.Name == ThreadCpu.OtherProcesses).Sum(t => t.CpuShare),
            ["jit_ms"] = (b.Jit - a.Jit).TotalMilliseconds,
        };
        if (scan) extra["ns_per_record"] = perOp(secs * 1e9);
        else
        {
            extra["p90_us"] = h.PercentileMicros(0.9);
            extra["p999_us"] = h.PercentileMicros(0.999);
            extra["latency_samples"] = h.Count;
        }
        return new BenchResult
        {
            Workload = workload,
            System = store.System,
            OpsPerSec = secs > 0 ? ops / secs : double.NaN,
            P50Us = scan ? 0 : h.PercentileMicros(0.5),
            P99Us = scan ? 0 : h.PercentileMicros(0.99),
            Ops = ops,
            Seconds = secs,
            Writers = store.Writers(workload),
            LogBytesPerOp = run.LogBytesPerOp,
            FsyncsPerSec = run.FsyncsPerSec,
            OpsPerRecord = run.OpsPerRecord,
            AllocBytesPerOp = perOp(b.TotalAlloc - a.TotalAlloc),
            LoopAllocBytesPerOp = loopAlloc is long la ? perOp(la) : null,
            Threads = threads,
            Extra = extra,
            Notes = notes,
        };
    }

    private static void Progress(BenchResult r) =>
        Console.WriteLine($"  {r.Workload,-12} {r.System,-10} {r.OpsPerSec,14:N0} {(r.Workload == Scan ? "records/s" : "ops/s    ")}" +
            (r.Workload == Scan ? "" : $"  p50 {r.P50Us,8:N2} us  p99 {r.P99Us,8:N2} us") + $"  ({r.Seconds:F2} s)");

    /// <summary>The goals of DESIGN §7 for the b+tree, met or not by each motr system of the run.</summary>
    public static void PrintGoals(TextWriter w, IReadOnlyList<BenchResult> results)
    {
        var motr = results.Where(r => r.System.StartsWith("motr", StringComparison.Ordinal)).Select(r => r.System).Distinct().ToList();
        w.WriteLine();
        if (motr.Count == 0)
        {
            w.WriteLine("goals (DESIGN §7): no motr row in this run");
            return;
        }
        w.WriteLine("goals (DESIGN §7; motr's writes are durable, the peers' are not):");
        foreach (var (workload, goal, what) in new[] { (Insert, 5.0, "insert >= 5x lmdb"), (Lookup, 1.0, "lookup >= lmdb") })
        {
            var cells = motr.Select(m => results.FirstOrDefault(r => r.System == m && r.Workload == workload) is { } r
                && Report.Ratio(results, r, LmdbPeer.SystemName) is double x
                    ? $"{m} {x.ToString("N2", CultureInfo.InvariantCulture)}x ({(x >= goal ? "met" : "not met")})"
                    : $"{m} -");
            w.WriteLine($"  {what,-22} {string.Join(", ", cells)}");
        }
        var scans = motr.Select(m => results.FirstOrDefault(r => r.System == m && r.Workload == Scan) is { } r
            ? $"{m} {r.OpsPerSec / 1e6:N1}M ({(r.OpsPerSec >= 20e6 ? "met" : "not met")})"
            : $"{m} -");
        w.WriteLine($"  {"scan >= 20M records/s",-22} {string.Join(", ", scans)}");
    }
}
