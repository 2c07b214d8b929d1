"""Build floor: `students build`'s settings and the rows that score a teacher's neurons."""
