using Motr.Be;

namespace Motr.Crash.Tests;

/// <summary>What every recorded crash-test run must have exercised of the log, before its images are checked.</summary>
internal static class RunCoverage
{
    /// <summary>
    /// The log wrapped, and checkpoints were taken. How many checkpoints a run makes depends on how the placer's
    /// batches fall, not on the seed alone: under CPU contention the placer takes more records at a time (one seed
    /// gave 9-22 checkpoints alone, 4 beside other test runs). Two are what the crash points need: a checkpoint in
    /// each header slot, and log space reused after one (the wrap).
    /// </summary>
    public static void AssertLogWrapsAndCheckpoints(DomainStats stats)
    {
        Assert.True(stats.Log.Bytes > stats.LogAreaSize, $"the log must wrap: {stats.Log.Bytes} bytes written over a {stats.LogAreaSize}-byte area");
        Assert.True(stats.Placing.Checkpoints >= 2, $"only {stats.Placing.Checkpoints} checkpoints");
    }
}
