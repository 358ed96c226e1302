using Motr.Be.Storage;
using Motr.Runtime;

namespace Motr.Be.Tests.TestSupport;

/// <summary>Small domains for tests.</summary>
public static class Engines
{
    public const long DataStart = 4096;

    public static DomainOptions Options(string dir, int segments = 2, long segmentSize = 1 << 20, long logSize = 4 << 20) => new()
    {
        Path = dir,
        Segments = segments,
        SegmentSize = segmentSize,
        SegmentMaxSize = 16 << 20,
        LogSize = logSize,
    };

    public static DomainOptions Sim(SimStorage storage, int segments = 2, long segmentSize = 256 << 10, long logSize = 1 << 20) => new()
    {
        Storage = storage,
        Segments = segments,
        SegmentSize = segmentSize,
        SegmentMaxSize = 4 << 20,
        LogSize = logSize,
        // Checkpoints only when asked, so the log still holds the records when a test "crashes".
        CheckpointInterval = TimeSpan.FromHours(1),
        CheckpointFraction = 0.9,
    };

    public static Task<Engine> Open(DomainOptions o) => Engine.OpenAsync(o);
}
