/*
 * request.h - a Snapshot request kept by the resolver, to be sent again
 * when it reconnects to a new daemon.
 */
#ifndef FINDERD_REQUEST_H
#define FINDERD_REQUEST_H

#include "internal.h"

/** A deep copy of a struct finderd_snapshot_request: @req points into @blob. */
struct fdi_saved_snapshot {
	struct finderd_snapshot_request req;
	struct finderd_interpreter interpreter;
	void *blob;
};

/**
 * fdi_snapshot_save() - copy @in and everything it points to into @out.
 * Return: 0 or -ENOMEM (@out untouched).
 */
int fdi_snapshot_save(const struct fdi_alloc *a, const struct finderd_snapshot_request *in,
		      struct fdi_saved_snapshot *out);

/** Release what fdi_snapshot_save() allocated and zero @s. */
void fdi_snapshot_release(const struct fdi_alloc *a, struct fdi_saved_snapshot *s);

#endif /* FINDERD_REQUEST_H */
