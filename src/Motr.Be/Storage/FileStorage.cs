using Microsoft.Win32.SafeHandles;

namespace Motr.Be.Storage;

/// <summary>An <see cref="IStorage"/> over a real directory, with positional I/O through <see cref="RandomAccess"/>.</summary>
public sealed class FileStorage : IStorage
{
    private readonly string _dir;

    /// <summary>Uses <paramref name="directory"/>, creating it if missing (unless <paramref name="createIfMissing"/> is false: then a
    /// missing folder throws <see cref="DirectoryNotFoundException"/>, and nothing is created).</summary>
    public FileStorage(string directory, bool createIfMissing = true)
    {
        _dir = Path.GetFullPath(directory);
        if (createIfMissing) Directory.CreateDirectory(_dir);
        else if (!Directory.Exists(_dir)) throw new DirectoryNotFoundException($"{_dir}: no such folder");
    }

    /// <inheritdoc />
    public string Location => _dir;

    /// <inheritdoc />
    public IStorageFile Open(string name, StorageOpenMode mode, StorageAccess access = StorageAccess.Positional)
    {
        string path = Full(name);
        if (access == StorageAccess.ReadOnly)
        {
            if (mode != StorageOpenMode.OpenExisting) throw new ArgumentException($"{name}: a read-only file must exist (StorageOpenMode.OpenExisting)", nameof(mode));
            // Without write access: writes through this handle fail (EBADF), as root too.
            return new RealFile(name, path, File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read), readOnly: true);
        }
        var fm = mode == StorageOpenMode.CreateNew ? FileMode.CreateNew : FileMode.Open;
        var handle = File.OpenHandle(path, fm, FileAccess.ReadWrite, FileShare.Read);
        if (mode == StorageOpenMode.CreateNew) Native.SyncDirectory(_dir);
        var file = new RealFile(name, path, handle);
        if (access != StorageAccess.ScatteredWrites || !Native.IsLinux) return file;
        var direct = Native.OpenDirect(path);
        return new StagedFile(file, direct is null ? null : new RealFile(name, path, direct));
    }

    /// <inheritdoc />
    /// <remarks>
    /// An advisory lock on the file <see cref="BeConstants.LockFileName"/> in the folder: flock(LOCK_EX) on Unix, taken
    /// explicitly as well as by .NET for <see cref="FileShare.None"/> (which skips it when System.IO.DisableFileLocking
    /// is set), and a sharing lock on Windows. The kernel drops it when the process
    /// dies, so a crash never leaves the folder locked; the file itself is left in place. Only a lock another holder
    /// has is reported as the folder in use; a lock file that cannot be opened or created (a read-only file system, a
    /// broken symlink, no permission) is reported as that, with the system's reason.
    /// </remarks>
    public IDisposable Lock() => TakeLock(shared: false);

    /// <inheritdoc />
    /// <remarks>
    /// The same file as <see cref="Lock"/>, opened for reading only and locked shared: flock(LOCK_SH) on Unix (explicitly
    /// too, as in <see cref="Lock"/>), a sharing lock that admits only readers on Windows. An engine's exclusive lock
    /// refuses it (the folder is in use), and it refuses an engine. Nothing is created: a folder without the lock file was
    /// never opened by an engine, or was copied without it, and no engine holds it now, so it is used without a lock (an
    /// engine that starts meanwhile could change the files under the reader). A lock file that exists but cannot be
    /// opened (a dangling symlink, a symlink loop, no permission) is reported as that, with the system's reason.
    /// </remarks>
    public IDisposable LockShared() => TakeLock(shared: true);

    /// <summary>Opens the lock file (shared: for reading, never creating it) and flocks it, exclusive or shared.</summary>
    private IDisposable TakeLock(bool shared)
    {
        string path = Full(BeConstants.LockFileName);
        FileStream stream;
        try
        {
            stream = shared
                ? new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read)
                : new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException ex) when (HeldByAnother(ex))
        {
            throw InUse(ex.Message, ex);
        }
        catch (FileNotFoundException) when (shared && new FileInfo(path).LinkTarget is null)
        {
            return NoLock.Instance;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new BeException($"{_dir}: cannot open{(shared ? "" : " or create")} the lock file {path}, which an engine holds while it uses the folder: {ex.Message}", ex);
        }
        // .NET takes that flock itself only while the switch System.IO.DisableFileLocking is off; set (as
        // DOTNET_SYSTEM_IO_DISABLEFILELOCKING=1 is on NFS), a second engine would open the folder. The lock guards the
        // domain, so it is taken here whatever the switch says (again, harmlessly, when .NET took it).
        if (!(shared ? Native.TryLockShared(stream.SafeFileHandle) : Native.TryLockExclusive(stream.SafeFileHandle)))
        {
            stream.Dispose();
            throw InUse($"flock of {path}: another open file holds it", null);
        }
        return stream;
    }

    /// <summary>No lock to release: <see cref="LockShared"/> of a folder without a lock file.</summary>
    private sealed class NoLock : IDisposable
    {
        public static readonly NoLock Instance = new();

        public void Dispose() { }
    }

    private BeException InUse(string why, Exception? inner) =>
        new($"{_dir}: the folder is in use by another engine (in this process or another one holds {BeConstants.LockFileName}, or reads the domain): {why}", inner);

    /// <summary>
    /// Whether opening the lock file failed because another holder has it locked: on Unix .NET reports flock's
    /// EWOULDBLOCK as a plain <see cref="IOException"/> whose HResult is the errno (11 on Linux, 35 on macOS and the
    /// BSDs); on Windows, a sharing or lock violation. Every other failure (EROFS, ELOOP, ENOENT, ...) is not contention.
    /// </summary>
    private static bool HeldByAnother(IOException ex)
    {
        if (ex.GetType() != typeof(IOException)) return false;
        if (OperatingSystem.IsWindows()) return (ex.HResult & 0xFFFF) is 32 or 33; // ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION
        return ex.HResult == Native.EWouldBlock;
    }

    /// <inheritdoc />
    public bool Exists(string name) => File.Exists(Full(name));

    /// <inheritdoc />
    public IReadOnlyList<string> List()
    {
        var names = new List<string>();
        foreach (var f in Directory.EnumerateFiles(_dir)) names.Add(Path.GetFileName(f));
        names.Sort(StringComparer.Ordinal);
        return names;
    }

    /// <inheritdoc />
    public void Rename(string from, string to)
    {
        File.Move(Full(from), Full(to), overwrite: true);
        Native.SyncDirectory(_dir);
    }

    /// <inheritdoc />
    public void Delete(string name)
    {
        File.Delete(Full(name));
        Native.SyncDirectory(_dir);
    }

    private string Full(string name)
    {
        if (name.Length == 0 || name.Contains('/') || name.Contains('\\') || name is "." or "..")
            throw new ArgumentException($"'{name}' is not a plain file name", nameof(name));
        return Path.Combine(_dir, name);
    }

    private sealed class RealFile(string name, string path, SafeFileHandle handle, bool readOnly = false) : IStorageFile
    {
        /// <summary>A file opened <see cref="StorageAccess.ReadOnly"/> refuses every change before the system is asked
        /// (its handle has no write access either; fdatasync would still be allowed on it).</summary>
        private void ThrowIfReadOnly(string what)
        {
            if (readOnly) throw new NotSupportedException($"cannot {what} {path}: the file is open read-only");
        }

        public string Name { get; } = name;

        public long Length => RandomAccess.GetLength(handle);

        public int Read(long offset, Span<byte> destination)
        {
            int total = 0;
            while (total < destination.Length)
            {
                int n = RandomAccess.Read(handle, destination[total..], offset + total);
                if (n == 0) break;
                total += n;
            }
            return total;
        }

        public void Write(long offset, ReadOnlySpan<byte> source)
        {
            ThrowIfReadOnly("write");
            RandomAccess.Write(handle, source, offset);
        }

        public void Write(long offset, IReadOnlyList<ReadOnlyMemory<byte>> parts)
        {
            ThrowIfReadOnly("write");
            RandomAccess.Write(handle, parts, offset);
        }

        public bool NextData(long offset, out long start, out long end) => Native.NextData(handle, offset, Length, out start, out end);

        public void SetLength(long length)
        {
            ThrowIfReadOnly("set the length of");
            RandomAccess.SetLength(handle, length);
        }

        public void Flush()
        {
            ThrowIfReadOnly("flush");
            Native.DataSync(handle, path);
        }

        public void Writeback(long offset, long length, bool wait)
        {
            if (!readOnly) Native.StartWriteback(handle, offset, length, wait, path);
        }

        public void Dispose() => handle.Dispose();

        public override string ToString() => path;
    }
}
