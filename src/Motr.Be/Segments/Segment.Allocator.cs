namespace Motr.Be.Segments;

public sealed unsafe partial class Segment
{
    private Alloc.Allocator? _allocator;

    /// <summary>
    /// The allocator of this segment's heap, created (and its state verified with
    /// <see cref="Alloc.Allocator.LoadAndVerify"/>) on first use. Use on the owner thread.
    /// </summary>
    /// <exception cref="BeCorruptionException">The allocator state does not match this build or the segment.</exception>
    public Alloc.Allocator Allocator
    {
        get
        {
            if (_allocator is { } a) return a;
            a = new Alloc.Allocator(this);
            a.LoadAndVerify();
            return _allocator = a;
        }
    }
}
