using System.Numerics;
using System.Runtime.InteropServices;

namespace Motr.Be.Storage;

/// <summary>
/// A file kept whole in a private copy in memory (the stage): writes land in the stage and reach the
/// underlying file only at <see cref="Flush"/>, one write (pwrite) per run of pages written since the
/// last flush, then its flush (fdatasync) — Linux only. Placing writes hundreds of thousands of small regions a second at scattered
/// offsets of segment files: a system call per region would cost more than the copy, and a shared
/// mapping of the file makes every checkpoint write-protect each dirty page again (a TLB shootdown to
/// every core running the process) and the next write to it fault. Nobody else maps the stage, so a
/// write is a memcpy and a dirty bit, and a flush has nothing to unmap.
/// <para>
/// Given a direct handle (O_DIRECT), a flush writes whole pages from the stage straight to the device,
/// without copying them into the page cache first: the copy, the cache's page allocation and its writeback
/// were most of a checkpoint's CPU (btree bench: 0.09 -> 0.04 us of checkpoint thread per insert, inserts
/// +9% in eight interleaved rounds). A partial last page goes through the cache. Should the direct handle
/// refuse a write (a file system that wants other alignment), the stage drops it and writes through the
/// cache from then on.
/// </para>
/// </summary>
/// <remarks>
/// The price is memory: the stage holds the whole file (read at open) for as long as it is open.
/// Writes and length changes come from one thread (the placer); <see cref="Flush"/> may run on another
/// (the checkpoint thread) concurrently with writes. A write that races a flush is either in the
/// flushed copy of its page or leaves the page dirty for the next flush: the writer sets a page's
/// dirty bit after copying, the flusher clears a word of bits before copying its pages out. The same holds
/// when the device reads a page while the placer writes into it: the page may go out with some of the
/// write's bytes, and goes out whole at the next flush; until then the log still holds that write (a
/// checkpoint never claims a group placed after its flush began), and recovery replays it.
/// </remarks>
internal sealed unsafe class StagedFile : IStorageFile
{
    private const int PageShift = 12;
    private const int Page = 1 << PageShift;
    // A run of dirty pages goes out in pieces of at most this many pages.
    private const int MaxRunPages = 256;

    private readonly IStorageFile _file;
    // Whole pages go out through this handle (O_DIRECT) while it works; null: through the page cache.
    private IStorageFile? _direct;
    private byte* _base;
    private long _length;   // the file's length as writers see it
    private long _mapped;   // bytes mapped for the stage: _length rounded up to a page
    private ulong[] _dirty = [];
    private long _writtenBack;
    // A length change replaces the mapping and the bits; a flush must not use them meanwhile.
    private readonly Lock _lock = new();

    /// <summary>
    /// Stages <paramref name="file"/>; <paramref name="direct"/>, if given, is a handle on the same file whose
    /// writes bypass the page cache, used for whole pages. It owns both from now on.
    /// </summary>
    public StagedFile(IStorageFile file, IStorageFile? direct = null)
    {
        _file = file;
        _direct = direct;
        long length = file.Length;
        try
        {
            Resize(length);
            long loaded = file.ReadData(length, _base);
            if (loaded < length) throw new IOException($"{file} ended at {loaded} bytes while loading {length}");
            // Touch what the load skipped (holes) now rather than on the placer's first write to each page.
            if (_mapped > 0) Native.madvise(_base, (nuint)_mapped, Native.MADV_POPULATE_WRITE);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string Name => _file.Name;

    public long Length => _length;

    public int Read(long offset, Span<byte> destination)
    {
        if (offset < 0) throw new ArgumentOutOfRangeException(nameof(offset));
        int n = (int)Math.Clamp(_length - offset, 0, destination.Length);
        new ReadOnlySpan<byte>(_base + offset, n).CopyTo(destination);
        return n;
    }

    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        if (offset < 0) throw new ArgumentOutOfRangeException(nameof(offset));
        if (source.IsEmpty) return;
        long end = offset + source.Length;
        if (end > _length) SetLength(end);
        source.CopyTo(new Span<byte>(_base + offset, source.Length));
        // Always the locked or, even on a page already dirty: it is also the fence that makes the copy above
        // visible before Flush can clear the bit. Skipping it when the bit reads set lets a flush running now
        // clear the bit and write the page without these bytes, which then never reach the file.
        for (long p = offset >> PageShift, last = (end - 1) >> PageShift; p <= last; p++)
            Interlocked.Or(ref _dirty[p >> 6], 1UL << (int)(p & 63));
    }

    public void Prefetch(long offset, int length)
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported || (ulong)offset >= (ulong)_length) return;
        // Every line of a short region (a record, an index shift, a header), the first few of a long one.
        long end = Math.Min(offset + Math.Min(length, MaxPrefetch), _length);
        for (long p = offset & ~63L; p < end; p += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch0(_base + p);
    }

    private const int MaxPrefetch = 256;

    public void SetLength(long length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length));
        lock (_lock)
        {
            _file.SetLength(length);
            // Past the old end the file reads as zeros, and so do the stage's new pages; past a new,
            // shorter end the stage must read as zeros too should the file grow again.
            if (length < _length && (length & (Page - 1)) != 0)
                new Span<byte>(_base + length, (int)(Page - (length & (Page - 1)))).Clear();
            Resize(length);
        }
    }

    public void Flush()
    {
        lock (_lock)
        {
            _window = _previous = default;
            long pages = PageCount(_length);
            for (int w = 0; w < _dirty.Length; w++)
            {
                if (Volatile.Read(ref _dirty[w]) == 0) continue;
                ulong bits = Interlocked.Exchange(ref _dirty[w], 0);
                while (bits != 0)
                {
                    int b = BitOperations.TrailingZeroCount(bits);
                    int run = BitOperations.TrailingZeroCount(~(bits >> b)); // pages b .. b+run-1 are dirty
                    long page = ((long)w << 6) + b;
                    if (page >= pages) break;
                    try
                    {
                        WriteBack(page, Math.Min(run, pages - page));
                    }
                    catch
                    {
                        // What was not written stays dirty: a later flush, or close, still owes it to the file.
                        Interlocked.Or(ref _dirty[w], bits);
                        throw;
                    }
                    bits = run == 64 ? 0 : bits & ~(((1UL << run) - 1) << b);
                }
            }
        }
        _file.Flush();
    }

    // A checkpoint writes up to the whole segment. Left to the final fdatasync, all of it reaches the
    // device's queue at once, and the log's own small fdatasync (its cache flush) waits behind it: 25-90 ms
    // log syncs, and as long a stall of every commit, at each checkpoint of the btree bench. So writeback is
    // started window by window as the flush writes, one window's writeback in flight while the next is
    // written into the page cache: the log's sync waits for a few MiB at most (measured: its longest sync
    // 5 ms instead of 90, max commit latency 8-20 ms instead of 40-90, inserts +4-10%), and the fdatasync
    // at the end finds little left to do.
    internal const long WritebackWindow = 2 << 20;
    private (long Start, long End) _window, _previous;

    private void Written(long at, long bytes)
    {
        if (_window.End == _window.Start) _window = (at, at + bytes);
        else _window.End = at + bytes;
        if (_window.End - _window.Start < WritebackWindow) return;
        WaitWindow(_previous);
        _file.Writeback(_window.Start, _window.End - _window.Start, wait: false);
        _previous = _window;
        _window = default;
    }

    private void WaitWindow((long Start, long End) w)
    {
        if (w.End > w.Start) _file.Writeback(w.Start, w.End - w.Start, wait: true);
    }

    public bool NextData(long offset, out long start, out long end) => _file.NextData(offset, out start, out end);

    public long WrittenBack => Volatile.Read(ref _writtenBack);

    /// <summary>Pages written since they last went to the file (for tests).</summary>
    internal int DirtyPageCount
    {
        get
        {
            lock (_lock)
            {
                int n = 0;
                foreach (ulong w in _dirty) n += BitOperations.PopCount(w);
                return n;
            }
        }
    }

    private void WriteBack(long page, long count)
    {
        while (count > 0)
        {
            int n = (int)Math.Min(count, MaxRunPages);
            long at = page << PageShift;
            int bytes = (int)Math.Min((long)n << PageShift, _length - at);
            if (!WriteDirect(at, bytes))
            {
                _file.Write(at, new ReadOnlySpan<byte>(_base + at, bytes));
                Written(at, bytes);
            }
            Volatile.Write(ref _writtenBack, _writtenBack + bytes); // under the lock: one writer
            page += n;
            count -= n;
        }
    }

    /// <summary>Writes whole pages through the direct handle; false when there is none, the run ends in a partial page, or the handle refused (dropped for good).</summary>
    private bool WriteDirect(long at, int bytes)
    {
        if (_direct is null || (bytes & (Page - 1)) != 0) return false;
        try
        {
            _direct.Write(at, new ReadOnlySpan<byte>(_base + at, bytes));
            DirectBytes += bytes;
            return true;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            // EINVAL for alignment the file system wants otherwise, or any refusal: the cached path still
            // works, and a device that is really failing fails it too (or the fdatasync after).
            var d = _direct;
            _direct = null;
            d.Dispose();
            return false;
        }
    }

    /// <summary>Whether whole pages still go out through a direct handle.</summary>
    internal bool WritesDirect => _direct is not null;

    /// <summary>Bytes written through the direct handle so far.</summary>
    internal long DirectBytes { get; private set; }

    private static long PageCount(long length) => (length + Page - 1) >> PageShift;

    /// <summary>Maps the stage for <paramref name="length"/> bytes, keeping what it holds below that.</summary>
    private void Resize(long length)
    {
        long want = PageCount(length) << PageShift;
        if (want != _mapped)
        {
            void* p;
            if (want == 0)
            {
                Native.munmap(_base, (nuint)_mapped);
                p = null;
            }
            else
            {
                // mremap moves pages rather than copying them; either way the stage's address may change,
                // which is safe because only this thread (and a flush, excluded by the lock) uses it.
                p = _base == null
                    ? Native.mmap(null, (nuint)want, Native.PROT_READ | Native.PROT_WRITE, Native.MAP_PRIVATE | Native.MAP_ANONYMOUS, -1, 0)
                    : Native.mremap(_base, (nuint)_mapped, (nuint)want, Native.MREMAP_MAYMOVE);
                if (p == (void*)-1)
                    throw new IOException($"cannot map {want} bytes of memory to stage the writes of {_file}: errno {Marshal.GetLastPInvokeError()}");
                // Placing writes at random over the whole file: huge pages spare most of the TLB misses.
                Native.madvise(p, (nuint)want, Native.MADV_HUGEPAGE);
            }
            _base = (byte*)p;
            _mapped = want;
            long words = (PageCount(want) + 63) >> 6;
            if (words > _dirty.Length) Array.Resize(ref _dirty, (int)Math.Max(words, _dirty.Length * 2L));
        }
        // Pages past the end must not be written back by a later flush.
        for (long p = PageCount(length); p < (long)_dirty.Length << 6; p++)
            if ((p & 63) == 0 && _dirty[p >> 6] == 0) p += 63;
            else _dirty[p >> 6] &= ~(1UL << (int)(p & 63));
        _length = length;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_base != null) Native.munmap(_base, (nuint)_mapped);
            _base = null;
            _mapped = 0;
        }
        _direct?.Dispose();
        _file.Dispose();
    }

    public override string ToString() => _file.ToString()!;
}
