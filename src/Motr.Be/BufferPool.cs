using System.Collections.Concurrent;
using System.Numerics;

namespace Motr.Be;

/// <summary>
/// Buffers for group chunks and log records. They are rented on one thread (a locality, the log writer)
/// and returned on another (the log writer, the placer), which defeats the thread-local caches of
/// <see cref="System.Buffers.ArrayPool{T}.Shared"/>; this pool keeps per-size queues shared by all threads.
/// </summary>
internal sealed class BufferPool
{
    private const int MinShift = 12;          // 4 KiB
    private const int MaxShift = 28;          // 256 MiB, the largest record

    /// <summary>
    /// What each size class keeps, in bytes (at least <see cref="MinKeep"/> buffers). Group chunks stay out
    /// until placed, and the placer falls behind while it computes a checkpoint's deferred checksums: on the
    /// btree bench (3M keys) several hundred 64 KiB chunks were out at once. Kept to 128 buffers a class, the
    /// ones beyond were dropped and allocated again at the next checkpoint: 19-22 B of buffers per insert in the
    /// window, 7-11 B with this budget (what is left is the first growth to that peak). A budget in bytes keeps
    /// that many small buffers without keeping 128 of the largest records' size.
    /// </summary>
    internal const long DefaultKeepBytes = 64L << 20;

    private const int MinKeep = 2;

    /// <summary>The pool the engine uses.</summary>
    public static readonly BufferPool Shared = new(DefaultKeepBytes);

    private readonly ConcurrentQueue<byte[]>[] _classes = new ConcurrentQueue<byte[]>[MaxShift - MinShift + 1];
    private readonly int[] _counts = new int[MaxShift - MinShift + 1];
    private readonly int[] _keep = new int[MaxShift - MinShift + 1];

    internal BufferPool(long keepBytes)
    {
        for (int i = 0; i < _classes.Length; i++)
        {
            _classes[i] = new();
            _keep[i] = (int)Math.Clamp(keepBytes >> (MinShift + i), MinKeep, int.MaxValue);
        }
    }

    /// <summary>A buffer of at least <paramref name="size"/> bytes (a power of two) from the shared pool.</summary>
    public static byte[] Rent(int size) => Shared.RentBuffer(size);

    /// <summary>Gives a buffer from <see cref="Rent"/> back to the shared pool.</summary>
    public static void Return(byte[] buffer) => Shared.ReturnBuffer(buffer);

    /// <summary>A buffer of at least <paramref name="size"/> bytes (a power of two).</summary>
    internal byte[] RentBuffer(int size)
    {
        int shift = Math.Max(MinShift, 32 - BitOperations.LeadingZeroCount((uint)Math.Max(size - 1, 1)));
        if (shift > MaxShift) return GC.AllocateUninitializedArray<byte>(size);
        int cls = shift - MinShift;
        if (_classes[cls].TryDequeue(out var buf))
        {
            Interlocked.Decrement(ref _counts[cls]);
            return buf;
        }
        return GC.AllocateUninitializedArray<byte>(1 << shift);
    }

    /// <summary>Gives a buffer from <see cref="RentBuffer"/> back; kept if its class is within its budget.</summary>
    internal void ReturnBuffer(byte[] buffer)
    {
        int len = buffer.Length;
        if (!BitOperations.IsPow2(len)) return;
        int shift = BitOperations.Log2((uint)len);
        if (shift < MinShift || shift > MaxShift) return;
        int cls = shift - MinShift;
        if (Interlocked.Increment(ref _counts[cls]) > _keep[cls])
        {
            Interlocked.Decrement(ref _counts[cls]);
            return;
        }
        _classes[cls].Enqueue(buffer);
    }

    /// <summary>Buffers of <paramref name="size"/> bytes (a power of two) kept now.</summary>
    internal int Kept(int size) => _counts[BitOperations.Log2((uint)size) - MinShift];
}
