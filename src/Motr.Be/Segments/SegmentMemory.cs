using System.Runtime.InteropServices;
using Motr.Be.Storage;

namespace Motr.Be.Segments;

/// <summary>
/// The native memory image of a segment. On Linux the whole growth limit is reserved as address space
/// up front (PROT_NONE, no commit charge) and pages are made accessible as the segment grows, so the
/// base address never moves: a <c>ref</c> or span into the segment stays valid across growth.
/// Elsewhere the full limit is allocated at once.
/// </summary>
internal sealed unsafe class SegmentMemory : IDisposable
{
    private byte* _base;
    private readonly long _reserved;
    private readonly bool _mapped;

    public byte* Base => _base;
    public long Committed { get; private set; }
    public long Reserved => _reserved;

    public SegmentMemory(long maxSize, long initialSize)
    {
        if (initialSize > maxSize) throw new ArgumentOutOfRangeException(nameof(initialSize));
        _reserved = maxSize;
        if (Native.IsLinux)
        {
            void* p = Native.mmap(null, (nuint)maxSize, Native.PROT_NONE,
                Native.MAP_PRIVATE | Native.MAP_ANONYMOUS | Native.MAP_NORESERVE, -1, 0);
            if (p == (void*)-1)
                throw new OutOfMemoryException($"cannot reserve {maxSize} bytes of address space for a segment: errno {Marshal.GetLastPInvokeError()}");
            _base = (byte*)p;
            _mapped = true;
            // Random access over a large image misses the TLB on nearly every touch with 4 KiB pages;
            // transparent huge pages (where the kernel offers them on request) cut that. Advisory only.
            Native.madvise(p, (nuint)maxSize, Native.MADV_HUGEPAGE);
        }
        else
        {
            _base = (byte*)NativeMemory.AlignedAlloc((nuint)maxSize, BeConstants.PageSize);
            NativeMemory.Clear(_base, (nuint)maxSize);
        }
        Commit(initialSize);
    }

    /// <summary>Makes [0, size) accessible; new pages read as zero.</summary>
    /// <exception cref="OutOfMemoryException">The pages cannot be made accessible (the message gives the errno).</exception>
    public void Commit(long size)
    {
        int errno = TryCommit(size);
        if (errno != 0) throw new OutOfMemoryException($"cannot commit segment memory up to {size} bytes: errno {errno}");
    }

    /// <summary>Makes [0, size) accessible, new pages reading as zero; 0, or the errno of the failure (nothing changed then).</summary>
    public int TryCommit(long size)
    {
        if (size <= Committed) return 0;
        if (size > _reserved)
            throw new InvalidOperationException($"segment memory: {size} bytes exceeds the reserved {_reserved}");
        if (CommitFault?.Invoke(size) is int injected and not 0) return injected;
        if (_mapped && Native.mprotect(_base + Committed, (nuint)(size - Committed), Native.PROT_READ | Native.PROT_WRITE) != 0)
            return Marshal.GetLastPInvokeError();
        Committed = size;
        return 0;
    }

    /// <summary>Tests: an errno a commit up to the given size fails with instead of committing (0: commit).</summary>
    internal Func<long, int>? CommitFault { get; set; }

    /// <summary>
    /// Backs every committed page with memory now (MADV_POPULATE_WRITE, where the kernel has it), so the
    /// first change to a page after open does not pay for the page. Advisory: without it pages come on first touch.
    /// </summary>
    public void Populate()
    {
        if (_mapped && Committed > 0) Native.madvise(_base, (nuint)Committed, Native.MADV_POPULATE_WRITE);
    }

    public void Dispose()
    {
        if (_base == null) return;
        if (_mapped) Native.munmap(_base, (nuint)_reserved);
        else NativeMemory.AlignedFree(_base);
        _base = null;
    }
}
