using Motr.Be.Storage;

namespace Motr.Be.Tests.TestSupport;

/// <summary>
/// A <see cref="SimStorage"/> seen through hooks: a test intercepts each file's writes and flushes (by file and by
/// the calling thread's name) to block, order or fail them, and can make a flush fail the way Linux does
/// (<see cref="HookFile.LoseUnsynced"/>). Opens and reads have hooks of their own, and the files not yet disposed
/// are counted, so a test can tell that an open which failed or was cancelled released every file it opened.
/// </summary>
public sealed class HookStorage(SimStorage inner) : IStorage
{
    public SimStorage Inner { get; } = inner;

    /// <summary>Called before each (file, "write" / "flush" / "setlength", offset, length); may block or throw.</summary>
    public Action<HookFile, string, long, long>? Before { get; set; }

    /// <summary>Called before each open (name, access); may throw.</summary>
    public Action<string, StorageAccess>? BeforeOpen { get; set; }

    /// <summary>Called before each read (file, offset, length); may block or throw.</summary>
    public Action<HookFile, long, int>? BeforeRead { get; set; }

    /// <summary>Files opened through this storage and not yet disposed.</summary>
    public int OpenFiles => Volatile.Read(ref _openFiles);

    private int _openFiles;

    public string Location => "hook";

    public IStorageFile Open(string name, StorageOpenMode mode, StorageAccess access = StorageAccess.Positional)
    {
        BeforeOpen?.Invoke(name, access);
        var file = new HookFile(this, Inner.Open(name, mode, access));
        Interlocked.Increment(ref _openFiles);
        return file;
    }

    internal void Closed() => Interlocked.Decrement(ref _openFiles);

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
    private int _disposed;

    public string Name => inner.Name;

    public long Length => inner.Length;

    public int Read(long offset, Span<byte> destination)
    {
        owner.BeforeRead?.Invoke(this, offset, destination.Length);
        return inner.Read(offset, destination);
    }

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

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) owner.Closed();
        inner.Dispose();
    }
}
