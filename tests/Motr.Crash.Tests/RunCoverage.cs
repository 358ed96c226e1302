using Motr.Be;
using Motr.Runtime;

namespace Motr.Crash.Tests;

/// <summary>What every recorded crash-test run must have exercised of the log, before its images are checked.</summary>
internal static class RunCoverage
{
    /// <summary>Checkpoints a run asks for itself (<see cref="ForcedCheckpointAsync"/>), whatever the timing.</summary>
    public const int ForcedCheckpoints = 3;

    /// <summary>
    /// Writer 0 of locality 0 calls this before its transaction <paramref name="i"/> of <paramref name="count"/>: at a
    /// quarter, half and three quarters of its run it waits for a checkpoint of everything placed so far. The
    /// checkpoints the options trigger (log fill, interval) depend on how the placer's batches fall, not on the seed
    /// alone (one seed gave 9-22 alone and 4 beside other test runs); these three make the coverage below hold for
    /// every seed and every machine.
    /// </summary>
    public static Task ForcedCheckpointAsync(Engine engine, int locality, int writer, int i, int count) =>
        locality == 0 && writer == 0 && i > 0 && i % Math.Max(1, count / (ForcedCheckpoints + 1)) == 0 && i / Math.Max(1, count / (ForcedCheckpoints + 1)) <= ForcedCheckpoints
            ? engine.Domain.CheckpointAsync()
            : Task.CompletedTask;

    /// <summary>
    /// The log wrapped, and checkpoints were taken: at least the forced ones, each of which records a new
    /// checkpoint (a slot written, log space freed). The crash points need a checkpoint in each header slot and
    /// log space reused after one.
    /// </summary>
    public static void AssertLogWrapsAndCheckpoints(DomainStats stats)
    {
        Assert.True(stats.Log.Bytes > stats.LogAreaSize, $"the log must wrap: {stats.Log.Bytes} bytes written over a {stats.LogAreaSize}-byte area");
        Assert.True(stats.Placing.Checkpoints >= ForcedCheckpoints, $"only {stats.Placing.Checkpoints} checkpoints, though the run forced {ForcedCheckpoints}");
    }
}
