using Motr.Bench.Diagnostics;

namespace Motr.Bench;

/// <summary>
/// One measured row: a workload on one system. The first five members are the contract of the JSON
/// output; the rest are optional diagnostics (null when a system cannot report them).
/// </summary>
internal sealed record BenchResult
{
    public required string Workload { get; init; }
    public required string System { get; init; }
    public required double OpsPerSec { get; init; }
    public required double P50Us { get; init; }
    public required double P99Us { get; init; }

    /// <summary>Operations completed in the measured window, and its length.</summary>
    public long Ops { get; init; }
    public double Seconds { get; init; }

    /// <summary>Concurrent writers in total (all localities).</summary>
    public int? Writers { get; init; }
    public double? LogBytesPerOp { get; init; }
    public double? FsyncsPerSec { get; init; }
    public double? OpsPerRecord { get; init; }
    public double? AvgSyncUs { get; init; }

    /// <summary>Bytes allocated by the whole process per operation (GC.GetTotalAllocatedBytes).</summary>
    public double? AllocBytesPerOp { get; init; }

    /// <summary>Bytes allocated per operation by the threads running the per-op loop only.</summary>
    public double? LoopAllocBytesPerOp { get; init; }

    /// <summary>Where the CPU went during the window.</summary>
    public IReadOnlyList<ThreadCpuShare>? Threads { get; init; }

    /// <summary>More numbers for the JSON output, by field name (snake_case), specific to a bench.</summary>
    public IReadOnlyDictionary<string, double>? Extra { get; init; }

    /// <summary>With rounds (btree --rounds): this row's rate in every round, in round order; null for a single run.</summary>
    public IReadOnlyList<double>? RoundRates { get; init; }

    /// <summary>With rounds: which round (1-based) this median row was measured in.</summary>
    public int? Round { get; init; }

    /// <summary>Free-form lines printed under the table (engine counters and the like).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
}
