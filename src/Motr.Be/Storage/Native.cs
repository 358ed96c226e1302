using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Motr.Be.Storage;

/// <summary>The few libc calls .NET does not expose: fdatasync, directory fsync, O_DIRECT opens, writeback hints, and address-space reservation.</summary>
internal static partial class Native
{
    public static readonly bool IsLinux = OperatingSystem.IsLinux();

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fdatasync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);

    private const int O_WRONLY = 1, O_DIRECT = 0x4000, O_CLOEXEC = 0x80000;

    /// <summary>
    /// A second, write-only handle on <paramref name="path"/> whose writes bypass the page cache (O_DIRECT,
    /// Linux): they go from the caller's memory to the device, which must then be page-aligned. Null where
    /// the file system refuses it (or off Linux).
    /// </summary>
    public static SafeFileHandle? OpenDirect(string path)
    {
        if (!IsLinux) return null;
        int fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
        return fd < 0 ? null : new SafeFileHandle(fd, ownsHandle: true);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int flock(int fd, int operation);

    private const int LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4;

    /// <summary>
    /// Takes flock(LOCK_EX | LOCK_NB) on <paramref name="handle"/> (Unix; on Windows the caller's FileShare.None is the
    /// lock): false when another open file holds it. Taking it again through the handle that holds it succeeds. Errors
    /// other than EWOULDBLOCK (a file system without flock) count as taken, as .NET's own FileShare lock counts them.
    /// </summary>
    public static bool TryLockExclusive(SafeFileHandle handle) => TryLock(handle, LOCK_EX);

    /// <summary>
    /// Takes flock(LOCK_SH | LOCK_NB) on <paramref name="handle"/> (Unix; on Windows the caller's FileShare is the lock):
    /// false while another open file holds it exclusively. Errors other than EWOULDBLOCK count as taken, as above.
    /// </summary>
    public static bool TryLockShared(SafeFileHandle handle) => TryLock(handle, LOCK_SH);

    private static bool TryLock(SafeFileHandle handle, int operation)
    {
        if (OperatingSystem.IsWindows()) return true;
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            if (flock((int)handle.DangerousGetHandle(), operation | LOCK_NB) == 0) return true;
            return Marshal.GetLastPInvokeError() != EWouldBlock;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>EWOULDBLOCK: 11 on Linux, 35 on macOS and the BSDs.</summary>
    public static readonly int EWouldBlock = OperatingSystem.IsLinux() ? 11 : 35;

    [LibraryImport("libc", SetLastError = true)]
    private static partial long lseek(int fd, long offset, int whence);

    private const int SEEK_DATA = 3, SEEK_HOLE = 4, ENXIO = 6;

    /// <summary>
    /// The next data stretch of a file at or after <paramref name="offset"/> (lseek SEEK_DATA / SEEK_HOLE);
    /// on a file system that does not track holes, the whole rest of the file.
    /// </summary>
    public static bool NextData(SafeFileHandle handle, long offset, long length, out long start, out long end)
    {
        start = offset;
        end = length;
        if (offset >= length) return false;
        if (!IsLinux) return true;
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            int fd = (int)handle.DangerousGetHandle();
            long s = lseek(fd, offset, SEEK_DATA);
            if (s < 0) return Marshal.GetLastPInvokeError() != ENXIO; // ENXIO: only holes follow; other errors: no hole tracking
            if (s >= length) return false;
            long e = lseek(fd, s, SEEK_HOLE);
            start = s;
            end = e < 0 ? length : Math.Min(e, length);
            return true;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial void* mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial void* mremap(void* oldAddress, nuint oldSize, nuint newSize, int flags);

    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial int mprotect(void* addr, nuint length, int prot);

    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial int munmap(void* addr, nuint length);

    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial int madvise(void* addr, nuint length, int advice);

    internal const int MADV_HUGEPAGE = 14, MADV_POPULATE_WRITE = 23, MREMAP_MAYMOVE = 1;
    internal const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2;
    internal const int MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;

    /// <summary>fdatasync(2) on Linux; a full flush elsewhere.</summary>
    public static void DataSync(SafeFileHandle handle, string what)
    {
        if (!IsLinux)
        {
            RandomAccess.FlushToDisk(handle);
            return;
        }
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            if (fdatasync((int)handle.DangerousGetHandle()) != 0)
                throw new IOException($"fdatasync of {what} failed: errno {Marshal.GetLastPInvokeError()}");
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int sync_file_range(int fd, long offset, long nbytes, uint flags);

    private const uint SYNC_FILE_RANGE_WAIT_BEFORE = 1, SYNC_FILE_RANGE_WRITE = 2, SYNC_FILE_RANGE_WAIT_AFTER = 4;

    /// <summary>
    /// sync_file_range(2) on Linux: starts writeback of a range's dirty pages and, with <paramref name="wait"/>,
    /// waits for it. No durability of its own (no metadata, no device cache flush); a hint elsewhere, so ignored.
    /// </summary>
    public static void StartWriteback(SafeFileHandle handle, long offset, long length, bool wait, string what)
    {
        if (!IsLinux || length <= 0) return;
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            uint flags = wait ? SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER : SYNC_FILE_RANGE_WRITE;
            if (sync_file_range((int)handle.DangerousGetHandle(), offset, length, flags) != 0)
                throw new IOException($"writeback of {what} [{offset}, +{length}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>fsync of a directory, so that a create, rename or delete inside it is durable.</summary>
    public static void SyncDirectory(string path)
    {
        if (!IsLinux) return;
        int fd = open(path, 0 /* O_RDONLY */);
        if (fd < 0) throw new IOException($"open of directory {path} failed: errno {Marshal.GetLastPInvokeError()}");
        try
        {
            if (fsync(fd) != 0)
                throw new IOException($"fsync of directory {path} failed: errno {Marshal.GetLastPInvokeError()}");
        }
        finally
        {
            close(fd);
        }
    }
}
