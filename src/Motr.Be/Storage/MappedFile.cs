using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Motr.Be.Storage;

/// <summary>
/// A file written through a shared memory mapping: a small write is a memcpy into the page cache
/// instead of a pwrite(2), which costs microseconds of kernel time per call. Placing writes hundreds of
/// thousands of small regions a second into segment files, so they use this (Linux only).
/// <see cref="Flush"/> is msync(MS_SYNC) and fdatasync, just as durable as writes through the descriptor.
/// Writes past the mapped length (the file grows first, see <see cref="SetLength"/>) fall back to pwrite.
/// </summary>
internal sealed unsafe class MappedFile : IStorageFile
{
    private const int MS_SYNC = 4, MAP_SHARED = 1;
    private readonly string _path;
    private readonly SafeFileHandle _handle;
    private byte* _base;
    private long _mapped;
    // Writes and growth come from one thread (the placer), syncs from another (the checkpoint thread):
    // the lock keeps a sync from using a mapping that growth is replacing.
    private readonly Lock _mapLock = new();

    public MappedFile(string name, string path, SafeFileHandle handle)
    {
        Name = name;
        _path = path;
        _handle = handle;
        Map(RandomAccess.GetLength(handle));
    }

    public string Name { get; }

    public long Length => RandomAccess.GetLength(_handle);

    public int Read(long offset, Span<byte> destination)
    {
        // The mapping is the page cache itself: a copy out of it costs no system call.
        if ((ulong)offset <= (ulong)_mapped && (ulong)destination.Length <= (ulong)(_mapped - offset))
        {
            new ReadOnlySpan<byte>(_base + offset, destination.Length).CopyTo(destination);
            return destination.Length;
        }
        int total = 0;
        while (total < destination.Length)
        {
            int n = RandomAccess.Read(_handle, destination[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        if ((ulong)offset <= (ulong)_mapped && (ulong)source.Length <= (ulong)(_mapped - offset))
            source.CopyTo(new Span<byte>(_base + offset, source.Length));
        else
            RandomAccess.Write(_handle, source, offset);
    }

    public void Prefetch(long offset)
    {
        if (System.Runtime.Intrinsics.X86.Sse.IsSupported && (ulong)offset < (ulong)_mapped) System.Runtime.Intrinsics.X86.Sse.Prefetch0(_base + offset);
    }

    public void SetLength(long length)
    {
        lock (_mapLock)
        {
            RandomAccess.SetLength(_handle, length);
            Unmap();
            Map(length);
        }
    }

    public void Flush()
    {
        lock (_mapLock)
        {
            if (_base != null && Native.msync(_base, (nuint)_mapped, MS_SYNC) != 0)
                throw new IOException($"msync of {_path} failed: errno {Marshal.GetLastPInvokeError()}");
        }
        Native.DataSync(_handle, _path);
    }

    private void Map(long length)
    {
        if (length == 0) return;
        bool added = false;
        _handle.DangerousAddRef(ref added);
        try
        {
            void* p = Native.mmap(null, (nuint)length, Native.PROT_READ | Native.PROT_WRITE, MAP_SHARED, (int)_handle.DangerousGetHandle(), 0);
            if (p == (void*)-1) throw new IOException($"mmap of {_path} ({length} bytes) failed: errno {Marshal.GetLastPInvokeError()}");
            _base = (byte*)p;
            _mapped = length;
        }
        finally
        {
            if (added) _handle.DangerousRelease();
        }
    }

    private void Unmap()
    {
        if (_base != null) Native.munmap(_base, (nuint)_mapped);
        _base = null;
        _mapped = 0;
    }

    public void Dispose()
    {
        lock (_mapLock) Unmap();
        _handle.Dispose();
    }

    public override string ToString() => _path;
}
