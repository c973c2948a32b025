"""Large Embeddings maps: the picture of every point, the hover overlay and the selection by
lasso or box over all points (turn_backend.analysis.maps), on a few hand-placed points."""

from __future__ import annotations

import numpy as np

from turn_backend import analysis as an

RED, BLUE = (255, 0, 0), (0, 0, 255)
EXTENT = (0.0, 4.0, 0.0, 2.0)  # x0, x1, y0, y1: 4 x 2 pixels of one unit each
SHAPE = (2, 4)


def test_category_raster_puts_each_point_in_its_pixel_with_its_colour():
    x = np.array([0.5, 3.5, 3.5])
    y = np.array([1.5, 0.5, 0.5])  # top-left pixel; bottom-right twice
    pic = an.category_raster(x, y, np.array([0, 1, 1]), np.array([RED, BLUE]), EXTENT, SHAPE)
    assert pic.shape == (2, 4, 4) and pic.dtype == np.uint8
    assert tuple(pic[0, 0, :3]) == RED and tuple(pic[1, 3, :3]) == BLUE
    assert pic[1, 3, 3] == 255 and 0 < pic[0, 0, 3] < 255  # the fuller pixel is the more opaque
    empty = np.ones((2, 4), bool)
    empty[0, 0] = empty[1, 3] = False
    assert (pic[empty][:, 3] == 0).all()


def test_category_raster_mixes_the_colours_of_a_shared_pixel_by_count():
    x, y = np.full(4, 0.5), np.full(4, 0.5)
    pic = an.category_raster(x, y, np.array([0, 0, 0, 1]), np.array([RED, BLUE]), EXTENT, SHAPE)
    assert tuple(pic[1, 0, :3]) == (191, 0, 64)


def test_raster_skips_points_without_coordinates_or_outside_the_extent():
    x = np.array([np.nan, 9.0, 1.5])
    y = np.array([1.0, 1.0, 1.5])
    pic = an.category_raster(x, y, np.zeros(3, int), np.array([RED]), EXTENT, SHAPE)
    assert (pic[..., 3] > 0).sum() == 1 and pic[0, 1, 3] == 255


def test_value_raster_shows_the_mean_value_of_each_pixel():
    lut = np.array([[0, 0, 0], [128, 128, 128], [255, 255, 255]])
    x, y = np.array([0.5, 0.5, 2.5]), np.array([0.5, 0.5, 0.5])
    pic = an.value_raster(x, y, np.array([0.0, 1.0, 1.0]), lut, EXTENT, SHAPE)
    assert tuple(pic[1, 0, :3]) == (128, 128, 128) and tuple(pic[1, 2, :3]) == (255, 255, 255)


def test_overlay_rows_are_a_stable_even_subsample():
    assert an.overlay_rows(5, limit=10).tolist() == [0, 1, 2, 3, 4]
    rows = an.overlay_rows(1000, limit=100)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100 and (np.diff(rows) > 0).all()
    assert rows.tolist() == an.overlay_rows(1000, limit=100).tolist()
    assert rows.min() < 200 and rows.max() > 800


def grid_points():
    """A 10 x 10 grid of points at 0.5, 1.5, ..., 9.5 on each axis."""
    gx, gy = np.meshgrid(np.arange(10) + 0.5, np.arange(10) + 0.5)
    return gx.ravel(), gy.ravel()


def selection(box=(), lasso=()):
    return {"selection": {"points": [], "point_indices": [], "box": list(box), "lasso": list(lasso)}}


def test_a_lasso_selects_every_point_inside_its_polygon():
    x, y = grid_points()
    triangle = {"xref": "x", "yref": "y", "x": [0, 10.5, 0], "y": [0, 0, 10.5]}  # below the line x + y = 10.5
    inside = an.in_selection(x, y, selection(lasso=[triangle]))
    assert inside.tolist() == (x + y < 10.5).tolist()


def test_a_box_selects_its_rectangle_and_shapes_add_up():
    x, y = grid_points()
    box = {"xref": "x", "yref": "y", "x": [3, 1], "y": [0, 2]}  # corners in any order
    assert np.flatnonzero(an.in_selection(x, y, selection(box=[box]))).tolist() == [1, 2, 11, 12]
    square = {"x": [8, 10, 10, 8], "y": [8, 8, 10, 10]}
    both = an.in_selection(x, y, selection(box=[box], lasso=[square]))
    assert np.flatnonzero(both).tolist() == [1, 2, 11, 12, 88, 89, 98, 99]


def test_no_selection_selects_nothing():
    x, y = grid_points()
    assert not an.in_selection(x, y, None).any()
    assert not an.in_selection(x, y, selection()).any()
    assert not an.in_selection(x, y, selection(lasso=[{"x": [1, 2], "y": [1, 2]}])).any()  # not a polygon


def test_selection_geometry_tells_shapes_apart():
    a = selection(box=[{"x": [1, 2], "y": [1, 2]}])
    assert an.selection_geometry(a) == an.selection_geometry(selection(box=[{"x": [1.0, 2.0], "y": [1, 2]}]))
    assert an.selection_geometry(a) != an.selection_geometry(selection(lasso=[{"x": [1, 2], "y": [1, 2]}]))
    assert an.selection_geometry(None) == ()
