using Motr.Be;

namespace Motr.CrashChild;

/// <summary>
/// The geometry the crash child and the tests that verify its folder share: a small log, so that placing,
/// checkpoints and log wrap all happen within a few hundred milliseconds of work.
/// </summary>
public static class ChildConfig
{
    /// <summary>Segments (one locality each).</summary>
    public const int Segments = 2;

    /// <summary>Size of each segment.</summary>
    public const long SegmentSize = 1L << 20;

    /// <summary>Size of the log file (a 1 MiB log wraps every few thousand transactions).</summary>
    public const long LogSize = 1L << 20;

    /// <summary>Domain options for <paramref name="dir"/>. Always the same segment count: opening with more would add segments.</summary>
    public static DomainOptions Options(string dir, Action<string>? onWarning = null) => new()
    {
        Path = dir,
        Segments = Segments,
        SegmentSize = SegmentSize,
        SegmentMaxSize = SegmentSize,
        LogSize = LogSize,
        CheckpointFraction = 0.25,
        CheckpointInterval = TimeSpan.FromMilliseconds(20),
        OnWarning = onWarning,
    };
}
