using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Motr.Bench.Macro;

/// <summary>
/// Keys in the order one workload visits them, packed in one contiguous array (16 bytes each), so the
/// loop reads them sequentially and the harness adds no cache misses of its own to the system's.
/// </summary>
internal sealed class KeyStream(byte[] bytes)
{
    public const int KeySize = 16;

    public byte[] Bytes { get; } = bytes;

    public int Count => Bytes.Length / KeySize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ReadOnlySpan<byte> Key(int i) => new(Bytes, i * KeySize, KeySize);
}

/// <summary>
/// The data set of the btree bench: <c>n</c> uniformly random 16-byte keys from a seeded xorshift, and
/// the three orders the workloads visit them in: insert (the order they were drawn, which is random
/// with respect to key order), lookup and delete (two other random permutations). Every system gets the
/// same keys in the same orders. The value of a key is derived from the key (<see cref="BTreeValues"/>).
/// </summary>
internal sealed class KeySet
{
    private KeySet(KeyStream insert, KeyStream lookup, KeyStream delete)
    {
        Insert = insert;
        Lookup = lookup;
        Delete = delete;
    }

    public KeyStream Insert { get; }
    public KeyStream Lookup { get; }
    public KeyStream Delete { get; }
    public int Count => Insert.Count;

    /// <summary>Draws <paramref name="n"/> keys from <paramref name="seed"/> (duplicates among 128-bit random keys: about n²/2¹²⁹, never in practice).</summary>
    public static KeySet Generate(int n, ulong seed)
    {
        var keys = new byte[n * KeyStream.KeySize];
        var rng = new XorShift64(seed);
        var words = MemoryMarshal.Cast<byte, ulong>(keys.AsSpan());
        for (int i = 0; i < words.Length; i++) words[i] = rng.Next();
        var insert = new KeyStream(keys);
        return new KeySet(insert, Permuted(insert, seed + 1), Permuted(insert, seed + 2));
    }

    /// <summary>The keys of part <c>p</c> of <paramref name="parts"/> (by <see cref="PartOf"/>), each stream keeping its order.</summary>
    public KeySet[] Split(int parts)
    {
        if (parts == 1) return [this];
        var sets = new KeySet[parts];
        var insert = SplitStream(Insert, parts);
        var lookup = SplitStream(Lookup, parts);
        var delete = SplitStream(Delete, parts);
        for (int p = 0; p < parts; p++) sets[p] = new KeySet(insert[p], lookup[p], delete[p]);
        return sets;
    }

    /// <summary>Which of <paramref name="parts"/> parts (localities) a key belongs to: a multiplicative hash of its two halves.</summary>
    public static int PartOf(ReadOnlySpan<byte> key, int parts)
    {
        ulong h = (BinaryPrimitives.ReadUInt64LittleEndian(key) ^ BinaryPrimitives.ReadUInt64LittleEndian(key[8..]) * 0xC2B2AE3D27D4EB4FUL) * 0x9E3779B97F4A7C15UL;
        return (int)((h >> 32) % (uint)parts);
    }

    private static KeyStream[] SplitStream(KeyStream s, int parts)
    {
        var counts = new int[parts];
        for (int i = 0; i < s.Count; i++) counts[PartOf(s.Key(i), parts)]++;
        var bytes = counts.Select(c => new byte[c * KeyStream.KeySize]).ToArray();
        var filled = new int[parts];
        for (int i = 0; i < s.Count; i++)
        {
            var k = s.Key(i);
            int p = PartOf(k, parts);
            k.CopyTo(bytes[p].AsSpan(filled[p]++ * KeyStream.KeySize));
        }
        return bytes.Select(b => new KeyStream(b)).ToArray();
    }

    private static KeyStream Permuted(KeyStream s, ulong seed)
    {
        int n = s.Count;
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        var rng = new XorShift64(XorShift64.SeedFor((long)seed));
        for (int i = n - 1; i > 0; i--)
        {
            int j = (int)(rng.Next() % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }
        var bytes = new byte[s.Bytes.Length];
        for (int i = 0; i < n; i++) s.Key(order[i]).CopyTo(bytes.AsSpan(i * KeyStream.KeySize));
        return new KeyStream(bytes);
    }
}

/// <summary>The 100-byte value of a key: the key six times (the i-th copy plus i in every byte) and its first 4 bytes; a few vector stores.</summary>
internal static class BTreeValues
{
    public const int ValueSize = 100;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Fill(ReadOnlySpan<byte> key, Span<byte> value)
    {
        if (value.Length < ValueSize || key.Length != KeyStream.KeySize) throw new ArgumentException("value needs 100 bytes, key 16");
        var k = Vector128.Create(key);
        ref byte v = ref MemoryMarshal.GetReference(value);
        for (int i = 0; i < 6; i++) (k + Vector128.Create((byte)i)).StoreUnsafe(ref v, (nuint)(i * 16));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref v, 96), Unsafe.ReadUnaligned<uint>(ref MemoryMarshal.GetReference(key)));
    }

    /// <summary>Whether <paramref name="value"/> is the value of <paramref name="key"/> (<paramref name="scratch"/>: 100 bytes to build it in).</summary>
    public static bool Matches(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, Span<byte> scratch)
    {
        if (value.Length != ValueSize) return false;
        Fill(key, scratch);
        return value.SequenceEqual(scratch[..ValueSize]);
    }
}
