"""Budget floor: storage arithmetic for planned and measured stores."""
