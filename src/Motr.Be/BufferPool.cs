using System.Collections.Concurrent;
using System.Numerics;

namespace Motr.Be;

/// <summary>
/// Buffers for group chunks and log records. They are rented on one thread (a locality, the log writer)
/// and returned on another (the log writer, the placer), which defeats the thread-local caches of
/// <see cref="System.Buffers.ArrayPool{T}.Shared"/>; this pool keeps per-size queues shared by all threads.
/// </summary>
internal static class BufferPool
{
    private const int MinShift = 12;          // 4 KiB
    private const int MaxShift = 28;          // 256 MiB, the largest record
    // Group chunks stay out until placed; the placer falls some tens of records behind while it computes a
    // checkpoint's deferred checksums, so two localities' groups need about a hundred buffers of a size.
    private const int KeepPerClass = 128;
    private static readonly ConcurrentQueue<byte[]>[] s_classes = CreateClasses();
    private static readonly int[] s_counts = new int[MaxShift - MinShift + 1];

    private static ConcurrentQueue<byte[]>[] CreateClasses()
    {
        var c = new ConcurrentQueue<byte[]>[MaxShift - MinShift + 1];
        for (int i = 0; i < c.Length; i++) c[i] = new();
        return c;
    }

    /// <summary>A buffer of at least <paramref name="size"/> bytes (a power of two).</summary>
    public static byte[] Rent(int size)
    {
        int shift = Math.Max(MinShift, 32 - BitOperations.LeadingZeroCount((uint)Math.Max(size - 1, 1)));
        if (shift > MaxShift) return GC.AllocateUninitializedArray<byte>(size);
        int cls = shift - MinShift;
        if (s_classes[cls].TryDequeue(out var buf))
        {
            Interlocked.Decrement(ref s_counts[cls]);
            return buf;
        }
        return GC.AllocateUninitializedArray<byte>(1 << shift);
    }

    /// <summary>Gives a buffer from <see cref="Rent"/> back.</summary>
    public static void Return(byte[] buffer)
    {
        int len = buffer.Length;
        if (!BitOperations.IsPow2(len)) return;
        int shift = BitOperations.Log2((uint)len);
        if (shift < MinShift || shift > MaxShift) return;
        int cls = shift - MinShift;
        if (Interlocked.Increment(ref s_counts[cls]) > KeepPerClass)
        {
            Interlocked.Decrement(ref s_counts[cls]);
            return;
        }
        s_classes[cls].Enqueue(buffer);
    }
}
