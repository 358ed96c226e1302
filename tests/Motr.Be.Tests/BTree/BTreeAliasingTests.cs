using Motr.Be.BTree;
using Motr.Be.Tx;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Changes given spans that point into the tree's own memory — a value or key read by a lookup or a cursor,
/// passed straight back: copy record A's value to key B, shrink a value from its own bytes, a key cut from
/// another record, delete by a cursor's key. The operations move and free records (a shift in a node, a
/// compaction, a split, a merge, an out-of-node chunk freed and reused) at the moment of the call; the
/// model is built from copies taken before each call, so any read of moved or freed bytes shows.
/// </summary>
public class BTreeAliasingTests
{
    /// <summary>Even keys 0, 2, 4, ... (big-endian) with values of <paramref name="valueLength"/>(i) bytes: full 512-byte leaves.</summary>
    private static async Task<(Tree Tree, SortedDictionary<byte[], byte[]> Model)> Filled(Motr.Be.Segments.Segment seg, BTreeConfig cfg, int count, Func<int, byte[]> value, int shuffle = 0)
    {
        var t = await Ops.Create(seg, cfg);
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        var order = Enumerable.Range(0, count).ToArray();
        if (shuffle != 0) new Random(shuffle).Shuffle(order);
        foreach (int i in order)
        {
            var k = Ops.U64((ulong)(2 * i));
            var v = value(i);
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v));
            model[k] = v;
        }
        return (t, model);
    }

    private static TxCredit Credit(Tree t) => TxCredit.Max(t.InsertCredit(8, 4096), t.UpdateCredit(8, 4096));

    [Theory]
    [InlineData(30)]   // in node: the old record is freed, its place taken by the new one and cleared
    [InlineData(2000)] // out of node: the chunk is freed (its free-list links over the value's first bytes) and reused
    public async Task Update_of_a_value_with_a_slice_of_its_own_bytes_stores_the_slice(int length)
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, model) = await Filled(seg, new BTreeConfig { NodeSize = 512, KeySize = 8 }, 60, i => Ops.Bytes(length + i % 7, i));
            int i = 0;
            foreach (var a in model.Keys.ToList())
            {
                using var tx = await seg.BeginAsync(Credit(t));
                Assert.Equal(BTreeStatus.Ok, t.Lookup(a, out ReadOnlySpan<byte> v));
                // Shrink from either end, or to a small in-node value.
                var slice = (i++ % 3) switch { 0 => v[1..], 1 => v[..^9], _ => v[5..17] };
                var want = slice.ToArray();
                Assert.Equal(BTreeStatus.Ok, t.Update(tx, a, slice));
                _ = tx.Close();
                model[a] = want;
            }
            Ops.AssertEqual(t, model, "after shrinking every value from its own bytes");
        });
    }

    [Fact]
    public async Task Update_with_a_neighbours_value_that_the_leaf_compaction_or_split_moves_stores_that_value()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, model) = await Filled(seg, new BTreeConfig { NodeSize = 512, KeySize = 8 }, 150, i => Ops.Bytes(8 + i * 13 % 70, i));
            var keys = model.Keys.ToList();
            for (int j = 0; j + 1 < keys.Count; j++)
            {
                // A takes B's value (its neighbour, usually in the same leaf): A's record is rebuilt, which may
                // compact or split the leaf and so move B's bytes first.
                byte[] a = keys[j], b = keys[j + 1];
                using var tx = await seg.BeginAsync(Credit(t));
                Assert.Equal(BTreeStatus.Ok, t.Lookup(b, out ReadOnlySpan<byte> vb));
                var want = vb.ToArray();
                Assert.Equal(BTreeStatus.Ok, t.Update(tx, a, vb));
                _ = tx.Close();
                model[a] = want;
                // Then B grows again from a longer record two places on, so that the next round moves things anew.
                if (j + 2 < keys.Count)
                {
                    using var tx2 = await seg.BeginAsync(Credit(t));
                    var grown = Ops.Bytes(60 + j % 30, 1000 + j);
                    Assert.Equal(BTreeStatus.Ok, t.Update(tx2, b, grown));
                    _ = tx2.Close();
                    model[b] = grown;
                }
            }
            Ops.AssertEqual(t, model, "after every record took its neighbour's value");
        });
    }
}
