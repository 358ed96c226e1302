namespace Motr.Be.Storage;

/// <summary>How <see cref="IStorage.Open"/> treats a missing or existing file.</summary>
public enum StorageOpenMode
{
    /// <summary>The file must exist.</summary>
    OpenExisting,
    /// <summary>The file must not exist; it is created empty.</summary>
    CreateNew,
}

/// <summary>How a file will be used: a hint that lets an implementation pick the cheapest way, or a promise to only read it.</summary>
public enum StorageAccess
{
    /// <summary>Positional reads and writes of sizeable pieces (the log).</summary>
    Positional,
    /// <summary>Many small writes at scattered offsets (placing into segment files): <see cref="FileStorage"/> keeps such a file whole in memory, copies each write there, and writes the changed pages out at <see cref="IStorageFile.Flush"/>, instead of one system call per write.</summary>
    ScatteredWrites,
    /// <summary>
    /// Reads only (<see cref="DomainOptions.ReadOnly"/>): the file is opened without write access, so a file or file system
    /// that cannot be written opens, and <see cref="IStorageFile.Write(long, ReadOnlySpan{byte})"/>,
    /// <see cref="IStorageFile.SetLength"/> and <see cref="IStorageFile.Flush"/> throw instead of changing it. Only with
    /// <see cref="StorageOpenMode.OpenExisting"/>.
    /// </summary>
    ReadOnly,
}

/// <summary>
/// A flat folder of named files: where a domain keeps its log and segment files. Two implementations:
/// <see cref="FileStorage"/> over a real directory, and <see cref="SimStorage"/>, which records every
/// write and sync so tests can build the disk image a crash would leave.
/// </summary>
/// <remarks>Implementations are thread-safe: the log writer, the placer and recovery use them concurrently.</remarks>
public interface IStorage
{
    /// <summary>A human-readable name for messages (the directory path, or "sim").</summary>
    string Location { get; }

    /// <summary>Opens or creates <paramref name="name"/> for positional read and write.</summary>
    IStorageFile Open(string name, StorageOpenMode mode, StorageAccess access = StorageAccess.Positional);

    /// <summary>Whether <paramref name="name"/> exists.</summary>
    bool Exists(string name);

    /// <summary>Names of all files, in ordinal order.</summary>
    IReadOnlyList<string> List();

    /// <summary>Renames a closed file, replacing <paramref name="to"/> if it exists, and makes the rename durable.</summary>
    void Rename(string from, string to);

    /// <summary>Deletes a closed file if it exists, durably.</summary>
    void Delete(string name);

    /// <summary>
    /// Takes the folder for one domain until the returned handle is disposed: a second taker (another engine in
    /// this process or another process) is refused with a <see cref="BeException"/> naming the folder. Two engines
    /// on one folder would each replay and write the same log, and acknowledged transactions would be lost.
    /// </summary>
    IDisposable Lock();

    /// <summary>
    /// Takes the folder for reading only (<see cref="DomainOptions.ReadOnly"/>) until the returned handle is disposed,
    /// writing nothing to it: shared with other readers, refused with a <see cref="BeException"/> naming the folder while
    /// an engine holds it (<see cref="Lock"/>), and keeping an engine from taking it meanwhile. The default takes
    /// <see cref="Lock"/>, which is stricter (readers exclude each other too).
    /// </summary>
    IDisposable LockShared() => Lock();
}

/// <summary>
/// One open file: positional reads and writes of spans, and <see cref="Flush"/> with fdatasync
/// semantics (data and the size needed to read it are durable when it returns).
/// </summary>
public interface IStorageFile : IDisposable
{
    /// <summary>The file's name within its storage.</summary>
    string Name { get; }

    /// <summary>Current length in bytes.</summary>
    long Length { get; }

    /// <summary>Reads up to <c>destination.Length</c> bytes at <paramref name="offset"/>; returns how many were read (fewer only at end of file).</summary>
    int Read(long offset, Span<byte> destination);

    /// <summary>Writes <paramref name="source"/> at <paramref name="offset"/>, extending the file if needed. Not durable until <see cref="Flush"/>.</summary>
    void Write(long offset, ReadOnlySpan<byte> source);

    /// <summary>
    /// Writes <paramref name="parts"/> one after another from <paramref name="offset"/>, as <see cref="Write(long, ReadOnlySpan{byte})"/>
    /// would each in turn; a real file does it in one call (pwritev), so a log record need not be copied
    /// together first. Not durable until <see cref="Flush"/>.
    /// </summary>
    void Write(long offset, IReadOnlyList<ReadOnlyMemory<byte>> parts)
    {
        for (int i = 0; i < parts.Count; i++)
        {
            Write(offset, parts[i].Span);
            offset += parts[i].Length;
        }
    }

    /// <summary>Sets the file's length (zero-filling on growth). Not durable until <see cref="Flush"/>.</summary>
    void SetLength(long length);

    /// <summary>Makes every earlier write and length change of this file durable (fdatasync).</summary>
    void Flush();

    /// <summary>
    /// Bytes this file's flushes have written out from its stage since it was opened: for a staged file
    /// (<see cref="StorageAccess.ScatteredWrites"/>), whole pages at each flush, what a checkpoint costs the device.
    /// A file whose writes go straight through has no stage: 0.
    /// </summary>
    long WrittenBack => 0;

    /// <summary>
    /// The next stretch at or after <paramref name="offset"/> that may hold data: [<paramref name="start"/>,
    /// <paramref name="end"/>). Outside such stretches the file is a hole and reads as zeros, so a loader can
    /// skip it. False when nothing but holes follows. The default claims everything up to the length.
    /// </summary>
    bool NextData(long offset, out long start, out long end)
    {
        start = offset;
        end = Length;
        return offset < end;
    }

    /// <summary>
    /// A hint that a write of <paramref name="length"/> bytes at <paramref name="offset"/> follows soon, so a
    /// staged file can start bringing that memory into the cache (placing writes at random places: the misses
    /// overlap instead of queueing).
    /// </summary>
    void Prefetch(long offset, int length) { }

    /// <summary>
    /// Starts writing back the file's cached pages in [<paramref name="offset"/>, +<paramref name="length"/>)
    /// and, with <paramref name="wait"/>, waits until they are written. Durability still needs <see cref="Flush"/>:
    /// this only spreads a large flush out, so the device never queues all of it ahead of another file's
    /// small flush (the log's). The default does nothing.
    /// </summary>
    void Writeback(long offset, long length, bool wait) { }
}

/// <summary>Loading a whole file into memory.</summary>
internal static unsafe class StorageFileLoad
{
    /// <summary>
    /// Copies every data stretch of the first <paramref name="length"/> bytes of <paramref name="file"/> to the
    /// same offsets at <paramref name="destination"/>, skipping holes (they read as zeros, which fresh memory
    /// already is). Returns <paramref name="length"/>, or the offset where the file ended early.
    /// </summary>
    public static long ReadData(this IStorageFile file, long length, byte* destination)
    {
        long at = 0;
        while (at < length && file.NextData(at, out long start, out long end))
        {
            end = Math.Min(end, length);
            for (long done = start; done < end;)
            {
                int n = file.Read(done, new Span<byte>(destination + done, (int)Math.Min(1 << 30, end - done)));
                if (n == 0) return done;
                done += n;
            }
            at = end;
        }
        return length;
    }
}
