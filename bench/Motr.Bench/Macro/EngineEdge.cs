using System.Diagnostics;
using Motr.Be;
using Motr.Be.Tx;
using Motr.Bench.Diagnostics;
using Motr.Runtime;

namespace Motr.Bench.Macro;

/// <summary>Engine and process counters at one edge of a measured window.</summary>
internal sealed record EngineEdge(long Timestamp, long TotalAlloc, long LoopAlloc, long Completed, DomainStats Domain, SegmentTxStats[] Segments, ThreadCpu.Snapshot Cpu, int[] Gc)
{
    // The slow reads sit outside the window: before it they come first, after it last.
    public static async Task<EngineEdge> TakeBeforeAsync(Engine engine, TxLoad load)
    {
        var cpu = ThreadCpu.Take();
        long loopAlloc = await LocalityAllocAsync(engine);
        var segments = engine.Domain.Segments.Select(s => s.TxStats).ToArray();
        var domain = engine.Domain.Stats;
        long completed = load.Completed;
        long total = GC.GetTotalAllocatedBytes(precise: true);
        return new EngineEdge(Stopwatch.GetTimestamp(), total, loopAlloc, completed, domain, segments, cpu, ProcessEdge.GcCounts());
    }

    public static async Task<EngineEdge> TakeAfterAsync(Engine engine, TxLoad load)
    {
        long ts = Stopwatch.GetTimestamp();
        long total = GC.GetTotalAllocatedBytes(precise: true);
        long completed = load.Completed;
        var domain = engine.Domain.Stats;
        var segments = engine.Domain.Segments.Select(s => s.TxStats).ToArray();
        long loopAlloc = await LocalityAllocAsync(engine);
        var gc = ProcessEdge.GcCounts();
        return new EngineEdge(ts, total, loopAlloc, completed, domain, segments, ThreadCpu.Take(), gc);
    }

    private static async Task<long> LocalityAllocAsync(Engine engine)
    {
        long sum = 0;
        foreach (var l in engine.Localities) sum += await l.RunAsync(GC.GetAllocatedBytesForCurrentThread);
        return sum;
    }
}
