using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Motr.Be;

/// <summary>
/// CRC32C (Castagnoli), the checksum of every on-disk structure. Uses the CPU's crc32 instruction
/// through <see cref="BitOperations.Crc32C(uint, ulong)"/>; standard initial value and final xor, so
/// results match other CRC32C implementations (e.g. "123456789" gives 0xE3069283).
/// </summary>
/// <remarks>
/// The crc32 instruction has a latency of three cycles but a throughput of one, so blocks of a few
/// hundred bytes and up are summed as three interleaved streams, combined with precomputed operators
/// that append N zero bytes to a CRC (after Mark Adler's crc32c.c). Node checksums at every group
/// seal are the engine's largest CRC work.
/// </remarks>
public static class Crc32C
{
    private const int Long = 1024, Short = 128;
    private static readonly uint[] s_long = ZerosTable(Long);
    private static readonly uint[] s_short = ZerosTable(Short);

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
        for (; n - i >= 3 * Long; i += 3 * Long) state = Interleaved(state, ref Unsafe.Add(ref p, i), Long, s_long);
        for (; n - i >= 3 * Short; i += 3 * Short) state = Interleaved(state, ref Unsafe.Add(ref p, i), Short, s_short);
        for (; i + 8 <= n; i += 8)
            state = BitOperations.Crc32C(state, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, i)));
        for (; i < n; i++)
            state = BitOperations.Crc32C(state, Unsafe.Add(ref p, i));
        return state;
    }

    /// <summary>Three streams of <paramref name="len"/> bytes at once, then combined: crc(A|B|C) = shift(shift(a) ^ b) ^ c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Interleaved(uint crc0, ref byte p, int len, uint[] zeros)
    {
        uint crc1 = 0, crc2 = 0;
        for (int j = 0; j < len; j += 8)
        {
            crc0 = BitOperations.Crc32C(crc0, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, j)));
            crc1 = BitOperations.Crc32C(crc1, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, j + len)));
            crc2 = BitOperations.Crc32C(crc2, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, j + 2 * len)));
        }
        crc0 = Shift(zeros, crc0) ^ crc1;
        return Shift(zeros, crc0) ^ crc2;
    }

    /// <summary>The CRC state after <see cref="Long"/> (or <see cref="Short"/>) zero bytes more.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Shift(uint[] z, uint crc) =>
        z[crc & 0xFF] ^ z[256 + ((crc >> 8) & 0xFF)] ^ z[512 + ((crc >> 16) & 0xFF)] ^ z[768 + (crc >> 24)];

    // The operator appending len zero bytes (len a power of two), as four byte-indexed tables: GF(2) matrix squaring.
    private static uint[] ZerosTable(int len)
    {
        var odd = new uint[32];
        var even = new uint[32];
        odd[0] = 0x82F63B78; // the reflected polynomial: the operator for one zero bit
        uint row = 1;
        for (int k = 1; k < 32; k++)
        {
            odd[k] = row;
            row <<= 1;
        }
        Square(even, odd); // two zero bits
        Square(odd, even); // four
        uint[] op;
        while (true)
        {
            Square(even, odd); // 8, 32, 128, ... bits
            len >>= 1;
            if (len == 0) { op = even; break; }
            Square(odd, even);
            len >>= 1;
            if (len == 0) { op = odd; break; }
        }
        var table = new uint[1024];
        for (uint b = 0; b < 256; b++)
        {
            table[b] = Times(op, b);
            table[256 + b] = Times(op, b << 8);
            table[512 + b] = Times(op, b << 16);
            table[768 + b] = Times(op, b << 24);
        }
        return table;
    }

    private static uint Times(uint[] mat, uint vec)
    {
        uint sum = 0;
        for (int k = 0; vec != 0; k++, vec >>= 1)
            if ((vec & 1) != 0) sum ^= mat[k];
        return sum;
    }

    private static void Square(uint[] square, uint[] mat)
    {
        for (int k = 0; k < 32; k++) square[k] = Times(mat, mat[k]);
    }
}
