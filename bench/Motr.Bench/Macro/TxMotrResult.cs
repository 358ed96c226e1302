using System.Diagnostics;
using Motr.Bench.Diagnostics;

namespace Motr.Bench.Macro;

/// <summary>Turns the engine counters at the two edges of a tx window into a result row and its notes.</summary>
internal static class TxMotrResult
{
    public static BenchResult Compute(TxBench.Workload w, int writers, TxLoad load, EngineEdge a, EngineEdge b)
    {
        double secs = (b.Timestamp - a.Timestamp) / (double)Stopwatch.Frequency;
        long ops = b.Completed - a.Completed;
        var latency = new LatencyHistogram();
        foreach (var c in load.Counters) latency.Add(c.Latency);

        var log0 = a.Domain.Log;
        var log1 = b.Domain.Log;
        long records = log1.Records - log0.Records, syncs = log1.Syncs - log0.Syncs, groups = log1.Groups - log0.Groups;
        double syncSecs = (log1.SyncTime - log0.SyncTime).TotalSeconds;
        long closed = 0, sealedGroups = 0, captured = 0, logged = 0, spaceWaits = 0, abortedAtTurnEnd = 0;
        for (int i = 0; i < a.Segments.Length; i++)
        {
            closed += b.Segments[i].Closed - a.Segments[i].Closed;
            sealedGroups += b.Segments[i].GroupsSealed - a.Segments[i].GroupsSealed;
            captured += b.Segments[i].RegionsCaptured - a.Segments[i].RegionsCaptured;
            logged += b.Segments[i].RegionsLogged - a.Segments[i].RegionsLogged;
            spaceWaits += b.Segments[i].SpaceWaits - a.Segments[i].SpaceWaits;
            abortedAtTurnEnd += b.Segments[i].AbortedAtTurnEnd - a.Segments[i].AbortedAtTurnEnd;
        }
        var place0 = a.Domain.Placing;
        var place1 = b.Domain.Placing;
        double perOp(double x) => ops > 0 ? x / ops : double.NaN;

        var notes = new List<string>
        {
            $"latency close->persisted: p50 {latency.PercentileMicros(0.5):N1} us, p90 {latency.PercentileMicros(0.9):N1}, p99 {latency.PercentileMicros(0.99):N1}, " +
                $"p99.9 {latency.PercentileMicros(0.999):N1}, max {LatencyHistogram.TicksToMicros(latency.MaxTicks):N1} ({latency.Count:N0} samples)",
            $"log: {records / secs:N0} records/s, {(records > 0 ? (double)groups / records : 0):F2} groups/record, {(records > 0 ? (double)(log1.Bytes - log0.Bytes) / records : 0):N0} B/record, " +
                $"fdatasync avg {(syncs > 0 ? syncSecs * 1e6 / syncs : 0):N1} us ({syncSecs / secs:P0} of the window)",
            $"groups: {(sealedGroups > 0 ? (double)closed / sealedGroups : 0):N0} txs/group, {(captured > 0 ? (double)logged / captured : 0):F3} regions logged per region captured, " +
                $"{spaceWaits} log-space waits, {abortedAtTurnEnd} aborted at turn end",
            $"placing: {(place1.Regions - place0.Regions) / secs:N0} regions/s ({(place1.Bytes - place0.Bytes) / secs / (1 << 20):N1} MiB/s) written in place, " +
                $"{place1.Checkpoints - place0.Checkpoints} checkpoints; log used at end {b.Domain.LogUsed / (double)(1 << 20):N1} of {b.Domain.LogAreaSize / (double)(1 << 20):N0} MiB",
            $"alloc: {perOp(b.TotalAlloc - a.TotalAlloc):N3} B/tx in the process, {perOp(b.LoopAlloc - a.LoopAlloc):N3} B/tx on the locality threads; " +
                ProcessEdge.GcNote(a.Gc, b.Gc),
        };
        long checkpoints = place1.Checkpoints - place0.Checkpoints;
        if (checkpoints == 0 && spaceWaits == 0)
            notes.Add("WARNING: no checkpoint and no wait for log space in the window: this is a burst the log absorbed, not a sustained rate (use a smaller --log-mib or a longer window)");
        var threads = ThreadCpu.Between(a.Cpu, b.Cpu);
        notes.Add(ThreadCpu.PerOpNote(threads, secs, ops, "tx"));

        return new BenchResult
        {
            Workload = w.Name,
            System = TxBench.MotrSystem,
            OpsPerSec = ops / secs,
            P50Us = latency.PercentileMicros(0.5),
            P99Us = latency.PercentileMicros(0.99),
            Ops = ops,
            Seconds = secs,
            Writers = writers,
            LogBytesPerOp = perOp(log1.Bytes - log0.Bytes),
            FsyncsPerSec = syncs / secs,
            OpsPerRecord = records > 0 ? (double)ops / records : double.NaN,
            AvgSyncUs = syncs > 0 ? syncSecs * 1e6 / syncs : double.NaN,
            AllocBytesPerOp = perOp(b.TotalAlloc - a.TotalAlloc),
            LoopAllocBytesPerOp = perOp(b.LoopAlloc - a.LoopAlloc),
            Threads = threads,
            Notes = notes,
            Extra = new Dictionary<string, double>
            {
                ["records_per_sec"] = records / secs,
                ["txs_per_group"] = sealedGroups > 0 ? (double)closed / sealedGroups : double.NaN,
                ["log_space_waits"] = spaceWaits,
                ["checkpoints"] = checkpoints,
                ["placed_regions_per_sec"] = (place1.Regions - place0.Regions) / secs,
                ["p999_us"] = latency.PercentileMicros(0.999),
                ["cpu_us_per_op"] = ThreadCpu.PerOpMicros(threads, secs, ops),
                ["placer_cpu_us_per_op"] = ThreadCpu.PerOpMicros(threads, secs, ops, name => name == "motr-placer"),
                ["other_processes_cores"] = threads.Where(t => t.Name == ThreadCpu.OtherProcesses).Sum(t => t.CpuShare),
            },
        };
    }
}
