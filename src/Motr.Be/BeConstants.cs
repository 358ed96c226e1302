namespace Motr.Be;

/// <summary>
/// Every magic number, format version and fixed size of the engine's on-disk formats, in one place.
/// Formats are little-endian; magics read as ASCII in a hex dump.
/// </summary>
public static class BeConstants
{
    /// <summary>Page size: segment header size, segment size granularity, growth unit.</summary>
    public const int PageSize = 4096;

    /// <summary>
    /// Largest segment address space: 8 TiB. A segment reserves its whole address space at open; this keeps
    /// a mistyped limit from asking for more than a 64-bit process can map (x86-64 user space is 128 TiB).
    /// </summary>
    public const long MaxSegmentSize = 1L << 43;

    /// <summary>The unit a crash may tear a write at; log records are aligned to it.</summary>
    public const int SectorSize = 512;

    /// <summary>"MOTRSEG1" — segment header magic.</summary>
    public const ulong SegmentMagic = 0x3147455352544F4DUL;

    /// <summary>Segment format version written by this build.</summary>
    public const uint SegmentVersion = 1;

    /// <summary>"MOTRLOGH" — log header slot magic.</summary>
    public const ulong LogHeaderMagic = 0x48474F4C52544F4DUL;

    /// <summary>"MOTRLOGR" — log record header magic.</summary>
    public const ulong LogRecordMagic = 0x52474F4C52544F4DUL;

    /// <summary>Log format version written by this build (2: groups carry checksum descriptors; 3: groups pack their regions, <see cref="Log.GroupFlags.Packed"/>).</summary>
    public const uint LogVersion = 3;

    /// <summary>
    /// Oldest log format version this build reads. A version 1 group is a version 2 group without checksum
    /// descriptors (its MarkCount field was reserved, zero), and a version 2 group is a version 3 group
    /// without <see cref="Log.GroupFlags.Packed"/>, which the reader follows per group; so a log left by
    /// version 1 or 2 is replayed as is, and the next checkpoint rewrites the header slots as version 3.
    /// </summary>
    public const uint MinLogVersion = 1;

    /// <summary>"GRP1" — magic of one tx group inside a log record.</summary>
    public const uint GroupMagic = 0x31505247;

    /// <summary>Name of the log file in a domain folder.</summary>
    public const string LogFileName = "motr.log";

    /// <summary>The file a <see cref="Storage.FileStorage"/> locks while an engine has its folder open.</summary>
    public const string LockFileName = "motr.lock";

    /// <summary>Segment file name pattern: <c>seg-{id:D4}.motr</c>.</summary>
    public static string SegmentFileName(ulong id) => $"seg-{id:D4}.motr";
}
