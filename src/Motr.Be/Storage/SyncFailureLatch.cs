namespace Motr.Be.Storage;

/// <summary>
/// What the domain opens its files through: after one <see cref="IStorageFile.Flush"/> of a file has failed, every
/// later flush of it fails too, and flushes of one file never overlap.
/// </summary>
/// <remarks>
/// Linux reports a failed writeback once: the failed pages are marked clean (their data never reaches the disk) and
/// the next fdatasync of the file returns 0. Two threads sync the same file (the log writer and the checkpoint the
/// log; the placer and the checkpoint a segment), so without this a sync that failed on one thread could be followed
/// by a sync that "succeeds" on the other, and a record or a checkpoint would be taken as durable over lost bytes
/// (found by a helper's fault-injection probe). Flushes are serialised per file so that a failure is latched before
/// any later flush can start.
/// </remarks>
internal sealed class SyncFailureLatch(IStorage inner) : IStorage
{
    public string Location => inner.Location;

    public IStorageFile Open(string name, StorageOpenMode mode, StorageAccess access = StorageAccess.Positional) =>
        new File(inner.Open(name, mode, access));

    public bool Exists(string name) => inner.Exists(name);

    public IReadOnlyList<string> List() => inner.List();

    public void Rename(string from, string to) => inner.Rename(from, to);

    public void Delete(string name) => inner.Delete(name);

    public IDisposable Lock() => inner.Lock();

    public IDisposable LockShared() => inner.LockShared();

    private sealed class File(IStorageFile f) : IStorageFile
    {
        private readonly object _gate = new();
        private Exception? _failed;

        public string Name => f.Name;

        public long Length => f.Length;

        public int Read(long offset, Span<byte> destination) => f.Read(offset, destination);

        public void Write(long offset, ReadOnlySpan<byte> source) => f.Write(offset, source);

        public void Write(long offset, IReadOnlyList<ReadOnlyMemory<byte>> parts) => f.Write(offset, parts);

        public void SetLength(long length) => f.SetLength(length);

        public void Flush()
        {
            lock (_gate)
            {
                if (_failed is not null)
                    throw new IOException($"{f.Name}: an earlier fdatasync of this file failed ({_failed.Message}); data written before it may " +
                        "never have reached the disk, so no later sync of the file can make anything durable", _failed);
                try
                {
                    f.Flush();
                }
                catch (Exception e)
                {
                    _failed = e;
                    throw;
                }
            }
        }

        public long WrittenBack => f.WrittenBack;

        public bool NextData(long offset, out long start, out long end) => f.NextData(offset, out start, out end);

        public void Prefetch(long offset, int length) => f.Prefetch(offset, length);

        public void Writeback(long offset, long length, bool wait) => f.Writeback(offset, length, wait);

        public void Dispose() => f.Dispose();
    }
}
