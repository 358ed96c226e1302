using System.Diagnostics.Metrics;
using Motr.Be.Tx;

namespace Motr.Be.BTree;

/// <summary>
/// Run-time instruments of b+trees (the B-tree HLD's "instruments"), published through
/// <see cref="System.Diagnostics.Metrics"/> under the meter <see cref="MeterName"/>: observable counters of
/// operations, splits, merges, rebalances and cookie hits and misses, and observable gauges of depth, nodes,
/// records and bytes, one series per registered tree, tagged with its segment id and header offset (and a
/// name, if given). Nothing is added to the tree's hot path: every value is read from the tree when a
/// listener collects.
/// </summary>
/// <remarks>
/// <para>The counters are the <see cref="BTree.Stats"/> fields of the registered <see cref="BTree"/> object
/// (operations made through other objects of the same tree are not counted). They are plain fields written
/// on the locality thread and read from the collecting thread without synchronisation: each value is some
/// recent value (64-bit reads do not tear), not a consistent set, and a value may be a few operations old.</para>
/// <para>The gauges come from the tree's header in segment memory, which only the segment's owner may read.
/// A collection on the owner thread reads them directly; a collection from any other thread reports the
/// values taken by the owner at the previous collection (or read at registration) and posts a refresh to the
/// owner, so they lag by one collection. Node bytes are nodes × the leaf node size (an estimate when internal
/// nodes or older nodes have another size); out-of-node bytes are exact.</para>
/// <para>A collection never throws because of a registered tree. While the tree is gone (destroyed, through this
/// object or another, or another tree made at its place) none of its series is reported (an aborted destroy brings
/// them back); once its segment is closed (its engine disposed) the registration ends by itself, so a tree reopened
/// by a new engine on the same folder and registered again is reported once, not beside stale series of the same
/// tags. Off the owner thread a tree gone is seen one collection late, as the gauges are.</para>
/// <para>Dispose the registration when the tree is no longer used, at the latest before its engine is closed.</para>
/// </remarks>
public static class BTreeMetrics
{
    /// <summary>Name of the meter.</summary>
    public const string MeterName = "Motr.BTree";

    /// <summary>Observable counter of operations, tagged <see cref="OperationTag"/> = insert, delete, update or lookup.</summary>
    public const string Operations = "motr.btree.operations";
    /// <summary>Observable counter of node splits.</summary>
    public const string Splits = "motr.btree.splits";
    /// <summary>Observable counter of node merges.</summary>
    public const string Merges = "motr.btree.merges";
    /// <summary>Observable counter of sibling pairs rebalanced without merging.</summary>
    public const string Rebalances = "motr.btree.rebalances";
    /// <summary>Observable counter of nodes retagged because a key arrived outside their key prefix (see <see cref="BTreeStats.PrefixShortenings"/>).</summary>
    public const string PrefixShortenings = "motr.btree.prefix_shortenings";
    /// <summary>Observable counter of operations given a cookie, tagged <see cref="ResultTag"/> = hit or miss.</summary>
    public const string CookieUses = "motr.btree.cookie.uses";
    /// <summary>Observable gauge of the tree's levels.</summary>
    public const string Depth = "motr.btree.depth";
    /// <summary>Observable gauge of the tree's nodes.</summary>
    public const string Nodes = "motr.btree.nodes";
    /// <summary>Observable gauge of the tree's records.</summary>
    public const string Records = "motr.btree.records";
    /// <summary>Observable gauge of the tree's bytes, tagged <see cref="PartTag"/> = nodes or out_of_node.</summary>
    public const string Bytes = "motr.btree.bytes";

    /// <summary>Tag: where the tree's domain lives (string: its folder, <see cref="Domain.Location"/>). Two engines of one
    /// process open different folders, so their trees' series differ even where segment id and offset agree.</summary>
    public const string DomainTag = "motr.domain";
    /// <summary>Tag: id of the tree's segment (long).</summary>
    public const string SegmentTag = "motr.segment.id";
    /// <summary>Tag: offset of the tree's header in its segment (long).</summary>
    public const string TreeTag = "motr.btree.offset";
    /// <summary>Tag: the name given at registration (string; absent when none was given).</summary>
    public const string NameTag = "motr.btree.name";
    /// <summary>Tag of <see cref="Operations"/>: insert, delete, update, lookup.</summary>
    public const string OperationTag = "motr.btree.operation";
    /// <summary>Tag of <see cref="CookieUses"/>: hit, miss.</summary>
    public const string ResultTag = "result";
    /// <summary>Tag of <see cref="Bytes"/>: nodes, out_of_node.</summary>
    public const string PartTag = "part";

    private static readonly Meter s_meter = new(MeterName, "1.0");
    private static readonly object s_lock = new();
    private static Registration[] s_registrations = [];

    // Kept alive by the meter; the fields only make their creation explicit.
    private static readonly ObservableCounter<long> s_operations =
        s_meter.CreateObservableCounter(Operations, ObserveOperations, "{operation}", "b+tree operations by kind");
    private static readonly ObservableCounter<long> s_splits =
        s_meter.CreateObservableCounter(Splits, () => ObserveCounter(static s => s.Splits), "{split}", "b+tree node splits");
    private static readonly ObservableCounter<long> s_merges =
        s_meter.CreateObservableCounter(Merges, () => ObserveCounter(static s => s.Merges), "{merge}", "b+tree node merges");
    private static readonly ObservableCounter<long> s_rebalances =
        s_meter.CreateObservableCounter(Rebalances, () => ObserveCounter(static s => s.Rebalances), "{rebalance}", "b+tree sibling rebalances");
    private static readonly ObservableCounter<long> s_prefixShortenings =
        s_meter.CreateObservableCounter(PrefixShortenings, () => ObserveCounter(static s => s.PrefixShortenings), "{node}", "b+tree nodes retagged for a key outside their key prefix");
    private static readonly ObservableCounter<long> s_cookies =
        s_meter.CreateObservableCounter(CookieUses, ObserveCookies, "{operation}", "b+tree operations given a cookie, by whether its leaf was still right");
    private static readonly ObservableGauge<long> s_depth =
        s_meter.CreateObservableGauge(Depth, () => ObserveShape(static r => Volatile.Read(ref r.Height)), "{level}", "b+tree levels");
    private static readonly ObservableGauge<long> s_nodes =
        s_meter.CreateObservableGauge(Nodes, () => ObserveShape(static r => Volatile.Read(ref r.NodeCount)), "{node}", "b+tree nodes");
    private static readonly ObservableGauge<long> s_records =
        s_meter.CreateObservableGauge(Records, () => ObserveShape(static r => Volatile.Read(ref r.RecordCount)), "{record}", "b+tree records");
    private static readonly ObservableGauge<long> s_bytes =
        s_meter.CreateObservableGauge(Bytes, ObserveBytes, "By", "b+tree bytes: nodes (nodes x leaf size) and out-of-node keys and values");

    /// <summary>
    /// Publishes <paramref name="tree"/>'s counters and shape until the returned object is disposed. May be called
    /// on any thread: the first shape values are read at once (off the tree's locality as <see cref="BTree.Stats"/>
    /// reads them).
    /// </summary>
    /// <param name="tree">The tree object whose operations are counted.</param>
    /// <param name="name">An optional name, published as the <see cref="NameTag"/> tag.</param>
    /// <returns>Disposing it removes the tree's series (disposing it again does nothing).</returns>
    /// <exception cref="ObjectDisposedException">The tree is gone (destroyed, or another tree made at its place), or its engine is closed.</exception>
    /// <exception cref="InvalidOperationException">The same tree (through this object or another) is registered under the same
    /// name already: its series would have the same tags, which an exporter takes for one series.</exception>
    public static IDisposable Register(BTree tree, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(tree);
        _ = s_operations; // the instruments exist once anything is registered
        var r = new Registration(tree, name);
        if (!r.ReadShape())
        {
            _ = tree.Stats; // says why: the tree is gone or its engine closed
            throw new ObjectDisposedException(nameof(BTree), $"b+tree 0x{tree.Offset:X} in segment {tree.Segment.Id}: gone, or its engine closed");
        }
        lock (s_lock)
        {
            var old = s_registrations;
            // Registrations left when their engine closed are dropped here too, not only by a collection: without a
            // listener they would keep their tree objects (and the closed engine's segments) for ever. One pass: an
            // engine may close meanwhile, and a count taken in another pass would leave an empty slot.
            var a = new Registration[old.Length + 1];
            int n = 0;
            foreach (var x in old)
            {
                if (x.SameSeries(tree, name))
                    throw new InvalidOperationException($"b+tree 0x{tree.Offset:X} in segment {tree.Segment.Id} is registered already under " +
                        (name is null ? "no name" : $"the name '{name}'") + "; dispose that registration first, or give another name");
                if (!x.HasEnded) a[n++] = x;
            }
            a[n++] = r;
            if (n < a.Length) Array.Resize(ref a, n);
            Volatile.Write(ref s_registrations, a);
        }
        return r;
    }

    private static void Unregister(Registration r)
    {
        lock (s_lock)
        {
            int i = Array.IndexOf(s_registrations, r);
            if (i < 0) return;
            var a = new Registration[s_registrations.Length - 1];
            Array.Copy(s_registrations, 0, a, 0, i);
            Array.Copy(s_registrations, i + 1, a, i, a.Length - i);
            Volatile.Write(ref s_registrations, a);
        }
    }

    private static IEnumerable<Measurement<long>> ObserveOperations()
    {
        var regs = Volatile.Read(ref s_registrations);
        var list = new List<Measurement<long>>(regs.Length * 4);
        foreach (var r in regs)
        {
            if (!r.Publishes()) continue;
            var s = r.Tree.CountersOnly;
            list.Add(new(s.Inserts, r.InsertTags));
            list.Add(new(s.Deletes, r.DeleteTags));
            list.Add(new(s.Updates, r.UpdateTags));
            list.Add(new(s.Lookups, r.LookupTags));
        }
        return list;
    }

    private static IEnumerable<Measurement<long>> ObserveCounter(Func<BTreeStats, long> field)
    {
        var regs = Volatile.Read(ref s_registrations);
        var list = new List<Measurement<long>>(regs.Length);
        foreach (var r in regs)
            if (r.Publishes()) list.Add(new(field(r.Tree.CountersOnly), r.Tags));
        return list;
    }

    private static IEnumerable<Measurement<long>> ObserveCookies()
    {
        var regs = Volatile.Read(ref s_registrations);
        var list = new List<Measurement<long>>(regs.Length * 2);
        foreach (var r in regs)
        {
            if (!r.Publishes()) continue;
            var s = r.Tree.CountersOnly;
            list.Add(new(s.CookieHits, r.HitTags));
            list.Add(new(s.CookieMisses, r.MissTags));
        }
        return list;
    }

    private static IEnumerable<Measurement<long>> ObserveShape(Func<Registration, long> field)
    {
        var regs = Volatile.Read(ref s_registrations);
        var list = new List<Measurement<long>>(regs.Length);
        foreach (var r in regs)
            if (r.Publishes()) list.Add(new(field(r), r.Tags));
        return list;
    }

    private static IEnumerable<Measurement<long>> ObserveBytes()
    {
        var regs = Volatile.Read(ref s_registrations);
        var list = new List<Measurement<long>>(regs.Length * 2);
        foreach (var r in regs)
        {
            if (!r.Publishes()) continue;
            list.Add(new(Volatile.Read(ref r.NodeBytes), r.NodeBytesTags));
            list.Add(new(Volatile.Read(ref r.LargeBytes), r.LargeBytesTags));
        }
        return list;
    }

    /// <summary>One registered tree: its tags, and its shape as last read (at registration, then on the owner thread).</summary>
    private sealed class Registration : IDisposable
    {
        public readonly BTree Tree;
        private readonly string? _name;
        private readonly ISegmentOwner? _owner;
        public readonly KeyValuePair<string, object?>[] Tags;
        public readonly KeyValuePair<string, object?>[] InsertTags, DeleteTags, UpdateTags, LookupTags, HitTags, MissTags, NodeBytesTags, LargeBytesTags;
        // Written at registration (any thread) and by refreshes on the owner thread, read anywhere.
        public long Height, NodeCount, RecordCount, NodeBytes, LargeBytes;
        private int _refreshPending;
        private volatile bool _disposed;
        private volatile bool _gone; // the tree was found destroyed (or replaced) at the last refresh

        public Registration(BTree tree, string? name)
        {
            Tree = tree;
            _name = name;
            _owner = tree.Segment.Tx.Owner;
            var basic = new List<KeyValuePair<string, object?>>
            {
                new(DomainTag, tree.Segment.Domain.Location),
                new(SegmentTag, (long)tree.Segment.Id),
                new(TreeTag, tree.Offset),
            };
            if (name != null) basic.Add(new(NameTag, name));
            Tags = basic.ToArray();
            InsertTags = With(OperationTag, "insert");
            DeleteTags = With(OperationTag, "delete");
            UpdateTags = With(OperationTag, "update");
            LookupTags = With(OperationTag, "lookup");
            HitTags = With(ResultTag, "hit");
            MissTags = With(ResultTag, "miss");
            NodeBytesTags = With(PartTag, "nodes");
            LargeBytesTags = With(PartTag, "out_of_node");
        }

        private KeyValuePair<string, object?>[] With(string tag, string value)
        {
            var a = new KeyValuePair<string, object?>[Tags.Length + 1];
            Tags.CopyTo(a, 0);
            a[^1] = new(tag, value);
            return a;
        }

        /// <summary>Whether the registration is over: disposed, or its segment closed (its engine was disposed).</summary>
        public bool HasEnded => _disposed || !Tree.Segment.IsOpen;

        /// <summary>
        /// Whether this live registration reports the series a registration of <paramref name="tree"/> under
        /// <paramref name="name"/> would: the same tree (segment, offset and creation stamp: not a tree made since at
        /// the same place), the same name.
        /// </summary>
        public bool SameSeries(BTree tree, string? name) =>
            !_disposed && ReferenceEquals(Tree.Segment, tree.Segment) && Tree.Offset == tree.Offset && Tree.Birth == tree.Birth && _name == name;

        /// <summary>
        /// Whether the registration's series are to be reported now, its shape brought up to date first: on the owner
        /// thread (or with no owner) read now; elsewhere the values are the last the owner read, and a refresh is
        /// asked of the owner for the next collection. Nothing is reported once the registration is disposed, while
        /// the tree is gone (destroyed, or another tree made at its place: an aborted destroy brings it back), nor
        /// once its segment is closed, which ends the registration (its engine was disposed: nothing will ever read
        /// the tree again, and the same tree reopened by a new engine has the same tags). Never throws: an exception
        /// out of a meter's callback would lose that instrument's measurements of every tree.
        /// </summary>
        public bool Publishes()
        {
            if (_disposed) return false;
            if (!Tree.Segment.IsOpen)
            {
                Dispose();
                return false;
            }
            RequestRefresh();
            return !_gone;
        }

        /// <summary>Reads the shape now if on the owner thread, else asks the owner to (at most one request pending).</summary>
        public void RequestRefresh()
        {
            if (_disposed) return;
            if (_owner is null || _owner.IsOwnerThread)
            {
                Refresh();
                return;
            }
            if (Interlocked.Exchange(ref _refreshPending, 1) != 0) return;
            // A stopped locality drops the post: the values then stay as they were.
            _owner.Post(static s =>
            {
                var r = (Registration)s!;
                Volatile.Write(ref r._refreshPending, 0);
                r.Refresh();
            }, this);
        }

        private void Refresh()
        {
            if (_disposed) return;
            _gone = !ReadShape();
        }

        /// <summary>
        /// Reads the shape now, on any thread (off the owner's, as <see cref="BTree.Stats"/> does, holding the segment's
        /// memory mapped); false, reading nothing, if the tree is gone or its segment closed. At registration, so the
        /// first collection reports the tree's shape even when it was registered off the owner thread.
        /// </summary>
        public bool ReadShape()
        {
            if (!Tree.TryReadShape(out long height, out long nodes, out long records, out long largeBytes, out int leafNodeSize)) return false;
            Volatile.Write(ref Height, height);
            Volatile.Write(ref NodeCount, nodes);
            Volatile.Write(ref RecordCount, records);
            Volatile.Write(ref NodeBytes, nodes * leafNodeSize);
            Volatile.Write(ref LargeBytes, largeBytes);
            return true;
        }

        public void Dispose()
        {
            _disposed = true;
            Unregister(this);
        }
    }
}
