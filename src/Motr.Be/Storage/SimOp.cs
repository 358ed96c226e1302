namespace Motr.Be.Storage;

/// <summary>What a <see cref="SimOp"/> in a <see cref="SimStorage"/> op log did.</summary>
public enum SimOpKind
{
    /// <summary>A write of <see cref="SimOp.Data"/> at <see cref="SimOp.Offset"/>; not durable until a later flush of the same file.</summary>
    Write,
    /// <summary>A length change to <see cref="SimOp.Length"/>; not durable until a later flush of the same file.</summary>
    SetLength,
    /// <summary>An fdatasync of <see cref="SimOp.File"/>: every earlier write and length change of that file becomes durable.</summary>
    Flush,
    /// <summary>A test's marker (<see cref="SimOp.Tag"/>) in the timeline; changes nothing on disk.</summary>
    Marker,
    /// <summary>An empty file was created (durable at once).</summary>
    Create,
    /// <summary><see cref="SimOp.File"/> was renamed to <see cref="SimOp.NewName"/>, replacing it (durable at once).</summary>
    Rename,
    /// <summary><see cref="SimOp.File"/> was deleted (durable at once).</summary>
    Delete,
}

/// <summary>
/// One entry of a <see cref="SimStorage"/> op log. Which members are meaningful depends on <see cref="Kind"/>;
/// the others are zero, empty or null.
/// </summary>
public readonly record struct SimOp
{
    /// <summary>What the operation did.</summary>
    public SimOpKind Kind { get; }

    /// <summary>The file's name when the operation ran (the source name for a rename; empty for a marker).</summary>
    public string File { get; }

    /// <summary>For <see cref="SimOpKind.Write"/>: the file offset written at; otherwise 0.</summary>
    public long Offset { get; }

    /// <summary>For <see cref="SimOpKind.Write"/>: the number of bytes written; for <see cref="SimOpKind.SetLength"/>: the new length; otherwise 0.</summary>
    public long Length { get; }

    /// <summary>For <see cref="SimOpKind.Write"/>: a private copy of the bytes written; otherwise empty.</summary>
    public ReadOnlyMemory<byte> Data { get; }

    /// <summary>For <see cref="SimOpKind.Marker"/>: the tag passed to <see cref="SimStorage.Mark"/>; otherwise null.</summary>
    public object? Tag { get; }

    /// <summary>For <see cref="SimOpKind.Rename"/>: the new name; otherwise null.</summary>
    public string? NewName { get; }

    /// <summary>The storage-internal identity of the file (an inode number), so replay follows renames.</summary>
    internal long FileId { get; }

    private SimOp(SimOpKind kind, string file, long fileId, long offset, long length,
        ReadOnlyMemory<byte> data, object? tag, string? newName)
    {
        Kind = kind;
        File = file;
        FileId = fileId;
        Offset = offset;
        Length = length;
        Data = data;
        Tag = tag;
        NewName = newName;
    }

    internal static SimOp Write(string file, long id, long offset, byte[] data) =>
        new(SimOpKind.Write, file, id, offset, data.Length, data, null, null);

    internal static SimOp SetLength(string file, long id, long length) =>
        new(SimOpKind.SetLength, file, id, 0, length, default, null, null);

    internal static SimOp Flush(string file, long id) =>
        new(SimOpKind.Flush, file, id, 0, 0, default, null, null);

    internal static SimOp Marker(object tag) =>
        new(SimOpKind.Marker, "", 0, 0, 0, default, tag, null);

    internal static SimOp Create(string file, long id) =>
        new(SimOpKind.Create, file, id, 0, 0, default, null, null);

    internal static SimOp Rename(string from, long id, string to) =>
        new(SimOpKind.Rename, from, id, 0, 0, default, null, to);

    internal static SimOp Delete(string file, long id) =>
        new(SimOpKind.Delete, file, id, 0, 0, default, null, null);

    /// <summary>A short description for test messages.</summary>
    public override string ToString() => Kind switch
    {
        SimOpKind.Write => $"Write({File}, @{Offset}, {Length} B)",
        SimOpKind.SetLength => $"SetLength({File}, {Length})",
        SimOpKind.Flush => $"Flush({File})",
        SimOpKind.Marker => $"Marker({Tag})",
        SimOpKind.Rename => $"Rename({File} -> {NewName})",
        _ => $"{Kind}({File})",
    };
}

/// <summary>How <see cref="SimStorage.CrashImage"/> treats the unsynced writes and length changes of each file.</summary>
public enum CrashVariant
{
    /// <summary>No unsynced operation reaches the disk.</summary>
    DropUnsynced,
    /// <summary>Every unsynced operation reaches the disk, in order.</summary>
    KeepUnsynced,
    /// <summary>
    /// Every unsynced operation reaches the disk in order, except the last unsynced write of each file,
    /// of which only a random subset of its 512-byte sectors does.
    /// </summary>
    TornLast,
    /// <summary>
    /// Each unsynced operation independently is dropped, applied, or (a write) torn to a random subset of
    /// its 512-byte sectors; the survivors are applied in their original order. Models reordering.
    /// </summary>
    Random,
}

/// <summary>One disk image yielded by <see cref="SimStorage.EnumerateCrashImages"/>.</summary>
/// <param name="OpCount">The crash happened right after this many ops of the log.</param>
/// <param name="Variant">How unsynced operations were treated.</param>
/// <param name="Image">The resulting disk: a new, independent storage with an empty op log.</param>
public sealed record CrashPoint(int OpCount, CrashVariant Variant, SimStorage Image)
{
    /// <summary>"after N ops, Variant", for test messages.</summary>
    public override string ToString() => $"crash after {OpCount} ops, {Variant}";
}

/// <summary>Which device operations fail once a fault armed by <see cref="SimStorage.FailAfter"/> triggers.</summary>
[Flags]
public enum SimFault
{
    /// <summary>Nothing fails.</summary>
    None = 0,
    /// <summary><see cref="IStorageFile.Write(long, ReadOnlySpan{byte})"/> and <see cref="IStorageFile.SetLength"/> fail.</summary>
    Write = 1,
    /// <summary><see cref="IStorageFile.Flush"/> fails.</summary>
    Flush = 2,
    /// <summary>Writes, length changes and flushes fail.</summary>
    WriteAndFlush = Write | Flush,
}
