using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Motr.Be;

/// <summary>
/// CRC32C (Castagnoli), the checksum of every on-disk structure. Uses the CPU's crc32 instruction
/// through <see cref="BitOperations.Crc32C(uint, ulong)"/>; standard initial value and final xor, so
/// results match other CRC32C implementations (e.g. "123456789" gives 0xE3069283).
/// </summary>
public static class Crc32C
{
    /// <summary>Checksum of <paramref name="data"/>.</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => ~Append(~0u, data);

    /// <summary>Checksum of the concatenation of <paramref name="first"/> and <paramref name="second"/>.</summary>
    public static uint Compute(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second) => ~Append(Append(~0u, first), second);

    /// <summary>
    /// Continues a running (un-finalised) checksum: start with <c>~0u</c>, append pieces, finish with <c>~state</c>.
    /// </summary>
    public static uint Append(uint state, ReadOnlySpan<byte> data)
    {
        ref byte p = ref MemoryMarshal.GetReference(data);
        nint n = data.Length;
        nint i = 0;
        // Three independent streams would be faster for large blocks; blocks here are nodes and
        // log records of a few KiB, where one stream at 8 bytes a step is already memory-bound.
        for (; i + 32 <= n; i += 32)
        {
            state = BitOperations.Crc32C(state, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, i)));
            state = BitOperations.Crc32C(state, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, i + 8)));
            state = BitOperations.Crc32C(state, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, i + 16)));
            state = BitOperations.Crc32C(state, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, i + 24)));
        }
        for (; i + 8 <= n; i += 8)
            state = BitOperations.Crc32C(state, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, i)));
        for (; i < n; i++)
            state = BitOperations.Crc32C(state, Unsafe.Add(ref p, i));
        return state;
    }
}
