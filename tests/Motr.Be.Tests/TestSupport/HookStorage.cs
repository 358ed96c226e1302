using Motr.Be.Storage;

namespace Motr.Be.Tests.TestSupport;

/// <summary>
/// A <see cref="SimStorage"/> seen through hooks: a test intercepts each file's writes and flushes (by file and by
/// the calling thread's name) to block, order or fail them, and can make a flush fail the way Linux does
/// (<see cref="HookFile.LoseUnsynced"/>).
/// </summary>
public sealed class HookStorage(SimStorage inner) : IStorage
{
    public SimStorage Inner { get; } = inner;

    /// <summary>Called before each (file, "write" / "flush" / "setlength", offset, length); may block or throw.</summary>
    public Action<HookFile, string, long, long>? Before { get; set; }

    public string Location => "hook";

    public IStorageFile Open(string name, StorageOpenMode mode, StorageAccess access = StorageAccess.Positional) => new HookFile(this, Inner.Open(name, mode, access));

    public bool Exists(string name) => Inner.Exists(name);

    public IReadOnlyList<string> List() => Inner.List();

    public void Rename(string from, string to) => Inner.Rename(from, to);

    public void Delete(string name) => Inner.Delete(name);

    public IDisposable Lock() => Inner.Lock();

    public IDisposable LockShared() => Inner.LockShared();
}

/// <summary>A file of <see cref="HookStorage"/>: remembers what each write since the last good flush replaced.</summary>
public sealed class HookFile(HookStorage owner, IStorageFile inner) : IStorageFile
{
    private readonly List<(long Offset, byte[] Old)> _pending = new();

    public string Name => inner.Name;

    public long Length => inner.Length;

    public int Read(long offset, Span<byte> destination) => inner.Read(offset, destination);

    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        owner.Before?.Invoke(this, "write", offset, source.Length);
        var old = new byte[source.Length];
        inner.Read(offset, old);
        inner.Write(offset, source);
        lock (_pending) _pending.Add((offset, old));
    }

    public void SetLength(long length)
    {
        owner.Before?.Invoke(this, "setlength", 0, length);
        inner.SetLength(length);
    }

    public void Flush()
    {
        owner.Before?.Invoke(this, "flush", 0, 0);
        inner.Flush();
        lock (_pending) _pending.Clear();
    }

    /// <summary>
    /// Linux after a failed writeback: the dirty pages are marked clean and never reach the disk (here: every write
    /// since the last good flush is undone, durably), and the error is reported to this one call only. Returns the
    /// exception for the hook to throw.
    /// </summary>
    public IOException LoseUnsynced(string what)
    {
        lock (_pending)
        {
            for (int i = _pending.Count - 1; i >= 0; i--) inner.Write(_pending[i].Offset, _pending[i].Old);
            inner.Flush();
            _pending.Clear();
        }
        return new IOException("hook: injected EIO (" + what + ")");
    }

    public void Dispose() => inner.Dispose();
}
