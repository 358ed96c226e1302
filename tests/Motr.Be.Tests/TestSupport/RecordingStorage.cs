using Motr.Be.Storage;

namespace Motr.Be.Tests.TestSupport;

/// <summary>
/// An <see cref="IStorage"/> that passes every call on to <paramref name="inner"/> and records it ("open seg-0001.motr
/// ReadOnly", "write motr.log", "flush ...", "setlength ...", "rename a b", "delete a", "lock", "lockshared"), so a test can
/// see every way the engine touched the folder, calls a file refused included.
/// </summary>
public sealed class RecordingStorage(IStorage inner) : IStorage
{
    private readonly List<string> _calls = new();

    /// <summary>Every call so far, in order.</summary>
    public IReadOnlyList<string> Calls
    {
        get { lock (_calls) return _calls.ToArray(); }
    }

    private void Add(string call)
    {
        lock (_calls) _calls.Add(call);
    }

    public string Location => inner.Location;

    public IStorageFile Open(string name, StorageOpenMode mode, StorageAccess access = StorageAccess.Positional)
    {
        Add($"open {name} {mode} {access}");
        return new File(this, inner.Open(name, mode, access));
    }

    public bool Exists(string name) => inner.Exists(name);

    public IReadOnlyList<string> List() => inner.List();

    public void Rename(string from, string to)
    {
        Add($"rename {from} {to}");
        inner.Rename(from, to);
    }

    public void Delete(string name)
    {
        Add($"delete {name}");
        inner.Delete(name);
    }

    public IDisposable Lock()
    {
        Add("lock");
        return inner.Lock();
    }

    public IDisposable LockShared()
    {
        Add("lockshared");
        return inner.LockShared();
    }

    private sealed class File(RecordingStorage owner, IStorageFile f) : IStorageFile
    {
        public string Name => f.Name;

        public long Length => f.Length;

        public int Read(long offset, Span<byte> destination) => f.Read(offset, destination);

        public void Write(long offset, ReadOnlySpan<byte> source)
        {
            owner.Add($"write {Name}");
            f.Write(offset, source);
        }

        public void Write(long offset, IReadOnlyList<ReadOnlyMemory<byte>> parts)
        {
            owner.Add($"write {Name}");
            f.Write(offset, parts);
        }

        public void SetLength(long length)
        {
            owner.Add($"setlength {Name}");
            f.SetLength(length);
        }

        public void Flush()
        {
            owner.Add($"flush {Name}");
            f.Flush();
        }

        public long WrittenBack => f.WrittenBack;

        public bool NextData(long offset, out long start, out long end) => f.NextData(offset, out start, out end);

        public void Prefetch(long offset, int length) => f.Prefetch(offset, length);

        public void Writeback(long offset, long length, bool wait)
        {
            owner.Add($"writeback {Name}");
            f.Writeback(offset, length, wait);
        }

        public void Dispose() => f.Dispose();
    }
}
