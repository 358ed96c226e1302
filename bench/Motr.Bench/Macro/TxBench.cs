using System.Diagnostics;
using Motr.Be;
using Motr.Bench.Diagnostics;
using Motr.Bench.Peers;
using Motr.Runtime;

namespace Motr.Bench.Macro;

/// <summary>
/// The <c>tx</c> bench (macro): durable small transactions through group commit, many concurrent
/// writers on every locality, against SQLite (WAL, synchronous=FULL) doing the same number of rows
/// per durable transaction. Each motr row runs on a freshly created domain.
/// </summary>
internal static class TxBench
{
    public const string MotrSystem = "motr";

    /// <summary>A workload: its name and how many 64-byte regions (motr) or 100-byte rows (SQLite) one transaction changes.</summary>
    internal sealed record Workload(string Name, int Regions);

    public static readonly Workload[] Workloads = [new("tx-1region", 1), new("tx-4region", 4)];

    private const int Localities = 2;

    /// <summary>Writers per locality when --writers is not given.</summary>
    public const int DefaultWriters = 512;

    public static async Task<List<BenchResult>> RunAsync(BenchOptions o, BenchDirectory dir)
    {
        if (o.SelfCheck) throw new UsageException("--self-check is a btree option");
        Console.WriteLine($"tx: warm-up {o.Warmup.TotalSeconds:0.##} s, window {o.Duration.TotalSeconds:0.##} s per row");
        o.Settings["warmup_seconds"] = o.Warmup.TotalSeconds;
        o.Settings["window_seconds"] = o.Duration.TotalSeconds;
        o.Settings["motr_localities"] = Localities;
        o.Settings["motr_writers_per_locality"] = string.Join(",", o.Writers ?? [DefaultWriters]);
        o.Settings["motr_log_mib"] = o.LogMiB;
        if (o.CheckpointFraction is double cf) o.Settings["motr_checkpoint_fraction"] = cf;
        o.Settings["quick"] = o.Quick;
        o.Settings["workloads"] = string.Join(",", Workloads.Where(w => o.RunsWorkload(w.Name)).Select(w => w.Name));
        var results = new List<BenchResult>();
        foreach (var w in Workloads.Where(w => o.RunsWorkload(w.Name)))
        {
            if (o.Runs(MotrSystem))
                foreach (int writers in o.Writers ?? [DefaultWriters])
                {
                    Settle.BetweenRows();
                    results.Add(Progress(await RunMotrAsync(w, writers, o, dir)));
                }
            if (o.Runs(SqlitePeer.SystemName))
            {
                Settle.BetweenRows();
                results.Add(Progress(await Task.Run(() => SqlitePeer.RunTx(w.Name, w.Regions, dir, o.Warmup, o.Duration))));
            }
        }
        if (results.Count == 0)
            throw new UsageException($"nothing to run: workloads are {string.Join(", ", Workloads.Select(w => w.Name))}; systems {MotrSystem}, {SqlitePeer.SystemName}");
        return results;
    }

    private static BenchResult Progress(BenchResult r)
    {
        string writers = r.Writers is int n ? $"{n} writers" : "";
        Console.WriteLine($"  {r.Workload,-11} {r.System,-12} {writers,13} {r.OpsPerSec,12:N0} ops/s  p50 {r.P50Us,9:N1} us  p99 {r.P99Us,9:N1} us");
        return r;
    }

    private static async Task<BenchResult> RunMotrAsync(Workload w, int writersPerLocality, BenchOptions o, BenchDirectory dir)
    {
        string path = dir.Sub($"motr-{w.Name}-{writersPerLocality}");
        var options = new DomainOptions
        {
            Path = path,
            Segments = Localities,
            SegmentSize = TxLoad.AreaOffset + TxLoad.AreaSize,
            LogSize = (long)o.LogMiB << 20,
            CheckpointFraction = o.CheckpointFraction ?? new DomainOptions().CheckpointFraction,
            OnWarning = m => Console.Error.WriteLine($"motr: {m}"),
        };
        long t0 = Stopwatch.GetTimestamp();
        var engine = await Engine.OpenAsync(options);
        double openSecs = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        BenchResult result;
        var notes = new List<string>();
        try
        {
            var load = new TxLoad(engine.Localities.Count, w.Regions);
            var running = engine.Localities.Select(l => l.RunAsync(() => load.StartWriters(l, writersPerLocality))).ToArray();
            using var sampler = o.AllocSample ? new AllocationSampler() : null;
            await Task.Delay(o.Warmup);
            var before = await EngineEdge.TakeBeforeAsync(engine, load);
            load.StartMeasuring();
            sampler?.Start();
            var timeline = await Timeline.RecordAsync(o.Duration, () => (load.Completed, engine.Domain.Stats.LogUsed));
            sampler?.Stop();
            var after = await EngineEdge.TakeAfterAsync(engine, load);
            load.Stop();
            await Task.WhenAll(running);
            // Errors no writer saw: an exception escaping a turn (the engine only prints it), a transaction the
            // engine aborted for staying open across a turn, a failed log or placer.
            if (engine.Domain.Failure is { } failure) throw new InvalidOperationException($"motr {w.Name}: the domain failed: {failure.Message}", failure);
            if (engine.Localities.Sum(l => l.Faults) is long faults and > 0)
                throw new InvalidOperationException($"motr {w.Name}: {faults:N0} exceptions escaped turns on the localities (printed above)");
            if (engine.Domain.InvariantViolations is long open and > 0)
                throw new InvalidOperationException($"motr {w.Name}: the engine aborted {open:N0} transactions left open across a turn");
            result = TxMotrResult.Compute(w, writersPerLocality * engine.Localities.Count, load, before, after);
            notes.Add(timeline.Describe());
            if (sampler is not null) notes.Add(sampler.Note(result.Ops, "tx"));
        }
        finally
        {
            t0 = Stopwatch.GetTimestamp();
            await engine.DisposeAsync();
            BenchDirectory.Remove(path);
        }
        notes.Add($"engine: open {openSecs:F2} s (creates a {o.LogMiB} MiB log and {Localities} segments of {options.SegmentSize >> 20} MiB), " +
            $"close {Stopwatch.GetElapsedTime(t0).TotalSeconds:F2} s");
        return result with { System = MotrSystem, Notes = [.. result.Notes, .. notes] };
    }
}
