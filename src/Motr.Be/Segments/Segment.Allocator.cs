namespace Motr.Be.Segments;

public sealed unsafe partial class Segment
{
    private Alloc.Allocator? _allocator;

    /// <summary>
    /// The allocator of this segment's heap, created (and its state verified with
    /// <see cref="Alloc.Allocator.LoadAndVerify"/>) on first use. Use on the owner thread.
    /// </summary>
    /// <exception cref="BeCorruptionException">The allocator state does not match this build or the segment.</exception>
    /// <exception cref="InvalidOperationException">Read off the segment's owner thread, where the first use would create and
    /// verify the allocator racing the owner (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public Alloc.Allocator Allocator
    {
        get
        {
            CheckOwner("allocator");
            if (_allocator is { } a) return a;
            a = new Alloc.Allocator(this);
            a.LoadAndVerify();
            return _allocator = a;
        }
    }
}
