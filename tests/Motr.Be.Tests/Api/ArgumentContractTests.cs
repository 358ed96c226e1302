using Motr.Be.Alloc;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tests.BTree;
using Motr.Be.Tx;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.Api;

/// <summary>
/// A null transaction or segment, or a length no record may have, is refused with an ArgumentException naming the
/// parameter, before anything changes (not a NullReferenceException from deep inside, nor a nonsense credit).
/// </summary>
public class ArgumentContractTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    private static void Null(string param, Action call) =>
        Assert.Equal(param, Assert.Throws<ArgumentNullException>(call).ParamName);

    [Fact]
    public async Task A_null_transaction_or_segment_is_refused_naming_the_parameter()
    {
        await using var h = await TreeHost.Start(verifyCaptures: false);
        await h.Run(async seg =>
        {
            Tree tree;
            using (var tx = await seg.BeginAsync(Tree.CreateCredit))
            {
                tree = Tree.Create(tx, seg, new BTreeConfig { NodeSize = 1024 });
                await tx.Close();
            }
            using (var tx = await seg.BeginAsync(tree.InsertCredit(1, 4)))
            {
                tree.Insert(tx, [1], [1, 2, 3, 4]);
                await tx.Close();
            }
            // Before: each of these threw NullReferenceException.
            Null("tx", () => tree.Insert(null!, [2], [1]));
            Null("tx", () => tree.Update(null!, [1], [1]));
            Null("tx", () => tree.Delete(null!, [1]));
            Null("tx", () => tree.InsertInPlace(null!, [2], 1, 0, static (s, _) => s.Clear()));
            Null("tx", () => tree.Destroy(null!));
            Null("tx", () => seg.Allocator.TryAlloc(null!, 16, 8, out _));
            Null("tx", () => seg.Allocator.Free(null!, 4096));
            Null("tx", () => seg.Grow(null!, seg.Size * 2));
            Null("tx", () => seg.SetRoot(null!, "r", 4096));
            Null("tx", () => seg.RemoveRoot(null!, "r"));
            Null("segment", () => Tree.Open(null!, 4096));
            Assert.Equal(1, tree.Count);
            Assert.Empty(seg.Roots());
        }).WaitAsync(T);
    }

    [Fact]
    public async Task Lengths_no_record_may_have_are_refused_by_the_credit_and_named_by_the_insert()
    {
        await using var h = await TreeHost.Start(verifyCaptures: false);
        await h.Run(async seg =>
        {
            Tree tree;
            using (var tx = await seg.BeginAsync(Tree.CreateCredit))
            {
                tree = Tree.Create(tx, seg, new BTreeConfig { NodeSize = 1024 });
                await tx.Close();
            }
            // Before: InsertCredit(int.MaxValue, ..) overflowed into a negative credit (BeginAsync then complained about
            // the credit, not the length), and a negative length gave a credit as if it were fine.
            Assert.Equal("keyLength", Assert.Throws<ArgumentOutOfRangeException>(() => tree.InsertCredit(-1, 4)).ParamName);
            Assert.Equal("keyLength", Assert.Throws<ArgumentOutOfRangeException>(() => tree.InsertCredit(int.MaxValue, 4)).ParamName);
            Assert.Equal("valueLength", Assert.Throws<ArgumentOutOfRangeException>(() => tree.InsertCredit(8, -4)).ParamName);
            Assert.Equal("valueLength", Assert.Throws<ArgumentOutOfRangeException>(() => tree.UpdateCredit(8, int.MaxValue)).ParamName);
            Assert.True(tree.InsertCredit(BTreeFormatConstants.MaxKeyLength, BTreeFormatConstants.MaxValueLength).Bytes > 0);
            using var tx2 = await seg.BeginAsync(tree.InsertCredit(1, 4));
            // Before: named "length", a parameter InsertInPlace does not have, and called -4 bytes "over the limit".
            var ex = Assert.ThrowsAny<ArgumentException>(() => tree.InsertInPlace(tx2, [1], -4, 0, static (s, _) => s.Clear()));
            Assert.Equal("valueLength", ex.ParamName);
            Assert.Contains("negative", ex.Message);
            Assert.Equal(new TxCredit(0, 0), tx2.Used);
            tx2.Abort();
            Assert.Equal(0, tree.Count);
        }).WaitAsync(T);
    }
}
