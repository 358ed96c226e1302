using Motr.Be.Tx;

namespace Motr.Be.BTree;

public sealed partial class BTree
{
    /// <summary>Credit of <see cref="SetNodeSizes"/>.</summary>
    public static TxCredit SetNodeSizesCredit => TxCredit.Region(TreeHeader.MutableLength) + Transaction.ChecksumCredit;

    /// <summary>Size of new leaves.</summary>
    public int LeafNodeSize => (int)Hdr.LeafSize;

    /// <summary>Size of new internal nodes.</summary>
    public int InternalNodeSize => (int)Hdr.InternalSize;

    /// <summary>
    /// Changes the size of nodes made from now on (r.btree.variable-node-size); existing nodes keep theirs,
    /// and nodes of different sizes live side by side. A size must be at least the smallest the tree was
    /// created with (records were sized for it).
    /// </summary>
    /// <exception cref="ArgumentException">A size is not a power of two from 512 to 65536, is below the tree's minimum, or
    /// makes operations need more log than a transaction may reserve on this domain (credits are sized by the largest
    /// node size ever set, so such a tree could never be changed again), or the transaction is of another segment.</exception>
    /// <exception cref="TxUsageException">The transaction is not open, or its remaining credit does not cover <see cref="SetNodeSizesCredit"/> (nothing was changed).</exception>
    public void SetNodeSizes(Transaction tx, int leafSize, int internalSize)
    {
        CheckNodeSize(leafSize, "leaf size");
        CheckNodeSize(internalSize, "internal node size");
        int min = MinimumNodeSize;
        if (leafSize < min || internalSize < min)
            throw new ArgumentException($"{Where}: node sizes {leafSize}/{internalSize}: this tree's records need nodes of at least {min} bytes");
        if (NodeSizeProblem(Math.Max(LargestNode, Math.Max(leafSize, internalSize)), internalSize) is { } tooBig)
            throw new ArgumentException($"{Where}: node sizes {leafSize}/{internalSize}: {tooBig}");
        CheckTx(tx, SetNodeSizesCredit, "set node sizes");
        BeginOp();
        ref TreeHeader h = ref TouchTree(tx);
        h.LeafSize = (uint)leafSize;
        h.InternalSize = (uint)internalSize;
        h.LargestNode = Math.Max(h.LargestNode, (uint)Math.Max(leafSize, internalSize));
    }

    /// <summary>The smallest node size this tree accepts: the one whose inline limit its records were sized by.</summary>
    public int MinimumNodeSize
    {
        get
        {
            int size = BTreeFormatConstants.MinNodeSize;
            while (MaxInline(size) < _inline) size *= 2;
            return size;
        }
    }
}
