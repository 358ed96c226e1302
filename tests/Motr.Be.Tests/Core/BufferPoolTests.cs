namespace Motr.Be.Tests.Core;

/// <summary>
/// The pool of group and record buffers keeps each size class up to a byte budget: as many small buffers
/// as were out at once under load, few large ones. A private pool per test, so other tests' traffic on the
/// shared one cannot change what these observe.
/// </summary>
public class BufferPoolTests
{
    [Fact]
    public void Buffers_come_back_up_to_the_class_budget_and_are_reused()
    {
        var pool = new BufferPool(keepBytes: 1 << 20); // 16 buffers of 64 KiB
        var out1 = new byte[40][];
        for (int i = 0; i < out1.Length; i++) out1[i] = pool.RentBuffer(50_000);
        Assert.All(out1, b => Assert.Equal(64 << 10, b.Length)); // rounded up to the class
        foreach (var b in out1) pool.ReturnBuffer(b);
        Assert.Equal(16, pool.Kept(64 << 10));

        var kept = new HashSet<byte[]>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < 16; i++) kept.Add(pool.RentBuffer(64 << 10));
        Assert.All(kept, b => Assert.Contains(b, out1)); // the kept ones, not new arrays
        Assert.Equal(0, pool.Kept(64 << 10));
        Assert.DoesNotContain(pool.RentBuffer(64 << 10), out1); // the class is empty: a new one
    }

    [Fact]
    public void Large_classes_keep_a_few_small_classes_many()
    {
        var pool = new BufferPool(BufferPool.DefaultKeepBytes);
        for (int i = 0; i < 5; i++) pool.ReturnBuffer(new byte[64 << 20]);
        Assert.Equal(2, pool.Kept(64 << 20)); // never fewer than two, whatever the budget says
        for (int i = 0; i < 600; i++) pool.ReturnBuffer(new byte[64 << 10]);
        Assert.Equal(600, pool.Kept(64 << 10)); // more than the 128 a class kept before the budget
    }

    [Fact]
    public void Buffers_not_of_a_class_are_not_kept()
    {
        var pool = new BufferPool(keepBytes: 1 << 20);
        pool.ReturnBuffer(new byte[5000]);      // not a power of two
        pool.ReturnBuffer(new byte[1024]);      // below the smallest class
        Assert.Equal(0, pool.Kept(4096));
        Assert.Equal(0, pool.Kept(8192));
    }
}
