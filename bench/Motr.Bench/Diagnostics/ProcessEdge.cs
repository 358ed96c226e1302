using System.Diagnostics;
using System.Runtime;

namespace Motr.Bench.Diagnostics;

/// <summary>
/// Process counters at one edge of a measured window: time, bytes allocated, collections, time spent
/// compiling (JIT, all threads) and the CPU of every thread. The slow read (the per-thread CPU snapshot) sits outside the window: first before
/// it, last after it.
/// </summary>
internal sealed record ProcessEdge(long Timestamp, long TotalAlloc, int[] Gc, TimeSpan Jit, ThreadCpu.Snapshot Cpu)
{
    public static ProcessEdge Before()
    {
        var cpu = ThreadCpu.Take();
        int[] gc = GcCounts();
        var jit = JitInfo.GetCompilationTime();
        long alloc = GC.GetTotalAllocatedBytes(precise: true);
        return new ProcessEdge(Stopwatch.GetTimestamp(), alloc, gc, jit, cpu);
    }

    public static ProcessEdge After()
    {
        long ts = Stopwatch.GetTimestamp();
        long alloc = GC.GetTotalAllocatedBytes(precise: true);
        int[] gc = GcCounts();
        var jit = JitInfo.GetCompilationTime();
        return new ProcessEdge(ts, alloc, gc, jit, ThreadCpu.Take());
    }

    public static int[] GcCounts() => [GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)];

    /// <summary>Seconds from <paramref name="a"/> to <paramref name="b"/>.</summary>
    public static double Seconds(ProcessEdge a, ProcessEdge b) => (b.Timestamp - a.Timestamp) / (double)Stopwatch.Frequency;

    /// <summary>"GCs gen0/1/2: x/y/z" between two edges.</summary>
    public static string GcNote(int[] a, int[] b) => $"GCs gen0/1/2: {b[0] - a[0]}/{b[1] - a[1]}/{b[2] - a[2]}";

    /// <summary>"GCs gen0/1/2: x/y/z; JIT n ms" between two edges.</summary>
    public static string GcJitNote(ProcessEdge a, ProcessEdge b) => $"{GcNote(a.Gc, b.Gc)}; JIT {(b.Jit - a.Jit).TotalMilliseconds:N0} ms";
}
