namespace Motr.Be.Tests.Core;

public class RadixSortTests
{
    /// <summary>The reference: a stable sort of the indexes by key.</summary>
    private static int[] Expected(long[] keys) =>
        Enumerable.Range(0, keys.Length).OrderBy(i => keys[i]).ThenBy(i => i).ToArray();

    private static int[] Order(long[] keys)
    {
        var order = new int[keys.Length];
        RadixSort.Order(keys, order, new ulong[2 * keys.Length]);
        return order;
    }

    [Theory]
    [InlineData(0, 1L << 30, 1)]
    [InlineData(1, 1L << 30, 2)]
    [InlineData(640, 1L << 29, 3)]        // a seal's worth of ranges in a 512 MiB segment
    [InlineData(1500, 1L << 28, 9)]       // a seal of a 256 MiB segment: three passes of 9 bits
    [InlineData(300, 1L << 20, 10)]       // fewer keys than 9-bit buckets: passes of 8 bits
    [InlineData(5000, 1L << 43, 4)]       // the largest segment
    [InlineData(3000, 300, 5)]            // many equal keys: arrival order kept
    [InlineData(1000, long.MaxValue, 6)]  // every digit in play: too wide to pack with the index
    [InlineData(70000, 1L << 45, 7)]      // 17 index bits and 45 key bits in one word
    public void Orders_like_a_stable_sort(int n, long bound, int seed)
    {
        var rng = new Random(seed);
        var keys = new long[n];
        for (int i = 0; i < n; i++) keys[i] = rng.NextInt64(bound);
        Assert.Equal(Expected(keys), Order(keys));
    }

    [Fact]
    public void Keys_sharing_every_digit_but_one_and_already_sorted_input()
    {
        var keys = new long[] { 0x7000_0000_0100, 0x7000_0000_0000, 0x7000_0000_0100, 0x7000_0000_0000 };
        Assert.Equal(new[] { 1, 3, 0, 2 }, Order(keys));
        var sorted = Enumerable.Range(0, 700).Select(i => (long)i * 64).ToArray();
        Assert.Equal(Enumerable.Range(0, 700).ToArray(), Order(sorted));
        var same = new long[50];
        Array.Fill(same, 12345L);
        Assert.Equal(Enumerable.Range(0, 50).ToArray(), Order(same));
    }

    [Fact]
    public void Keys_differing_only_in_middle_bits()
    {
        // Shared high bits and shared low zero bits (64-byte aligned offsets above a common base).
        var rng = new Random(8);
        var keys = new long[2000];
        for (int i = 0; i < keys.Length; i++) keys[i] = 0x5_0000_0000L + rng.Next(1 << 14) * 64L + 7;
        Assert.Equal(Expected(keys), Order(keys));
    }

    [Fact]
    public void Negative_keys_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Order(new long[] { 5, -1 }));
    }
}
