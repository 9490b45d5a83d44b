select sum(l_extendedprice), sum(l_discount), sum(l_tax), sum(l_quantity) from lineitem;
